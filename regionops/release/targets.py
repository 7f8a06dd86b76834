"""The release target a topology names: the drivers' (``command``, ``ecs``) or the lab's.

This factory sits above both the drivers and the lab, so that neither imports the other:
the drivers know how to deploy to external systems, the lab knows its own app processes.
"""

from __future__ import annotations

from regionops.drivers.deploy import CommandTarget, EcsTarget, ReleaseTarget
from regionops.errors import ConfigurationError
from regionops.lab.release_target import LabTarget
from regionops.topology import Topology


def target_for(topology: Topology) -> ReleaseTarget:
    """The release target the topology's application names."""
    release = topology.app().release
    if release.target == "lab":
        if not release.lab_dir:
            raise ConfigurationError("application.release.lab_dir is required for the lab target")
        return LabTarget(topology, release.lab_dir)
    if release.target == "command":
        return CommandTarget(topology)
    return EcsTarget(topology)
