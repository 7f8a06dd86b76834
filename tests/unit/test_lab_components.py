"""The lab's components without starting anything: what ``down`` stops, and the lab's release target."""

from __future__ import annotations

import pytest

from regionops.drivers.deploy import CommandTarget
from regionops.errors import ConfigurationError
from regionops.lab.config import LabConfig, LabPorts
from regionops.lab.lab import Lab, topology_document
from regionops.lab.release_target import LabTarget
from regionops.release.targets import target_for
from regionops.topology import parse_topology


def test_every_component_names_the_processes_it_stops(tmp_path):
    lab = Lab(LabConfig(lab_dir=tmp_path, ports=LabPorts.from_base(20000)))
    names = [name for component in lab.components() for name in component.process_names()]
    assert len(names) == len(set(names))  # no process belongs to two components
    assert {"moto", "slack-sink", "prefect-server", "prefect-serve", "alert-receiver", "prometheus"} <= set(names)
    assert {"app-eu", "app-us", "app-apac", "worker-eu", "worker-us", "worker-apac"} <= set(names)


def test_the_lab_topology_releases_through_the_labs_own_target(tmp_path):
    cfg = LabConfig(lab_dir=tmp_path, ports=LabPorts.from_base(20000))
    doc = topology_document(cfg)
    assert isinstance(target_for(parse_topology(doc)), LabTarget)
    doc["application"]["release"] = {"target": "command", "command": {"deploy": "true"}}
    assert isinstance(target_for(parse_topology(doc)), CommandTarget)


def test_the_lab_target_names_a_missing_lab(tmp_path):
    cfg = LabConfig(lab_dir=tmp_path / "lab", ports=LabPorts.from_base(20000))
    target = target_for(parse_topology(topology_document(cfg)))
    with pytest.raises(ConfigurationError, match="no lab in"):
        target.deploy("eu", "1.2.0")
