"""Which fault injector a topology asks for: the lab's or the command one.

This lives above both implementations because the lab's injector (:mod:`regionops.lab.faults`)
builds on drivers: a driver module that picked it would import the lab (upward, and a circle).
"""

from __future__ import annotations

from regionops.drivers.faults import CommandFaultInjector, FaultInjector
from regionops.errors import ConfigurationError
from regionops.topology import Topology


def fault_injector_for(topology: Topology) -> FaultInjector:
    """The fault injector the topology asks for (``drills.faults.driver``)."""
    settings = topology.drills.faults
    if settings.driver == "lab":
        # Imported only when asked for: production never loads the lab.
        from regionops.lab.faults import LabFaultInjector

        if not settings.lab_dir:
            raise ConfigurationError("drills.faults.driver is lab but drills.faults.lab_dir is not set")
        return LabFaultInjector(topology, settings.lab_dir)
    return CommandFaultInjector(topology)
