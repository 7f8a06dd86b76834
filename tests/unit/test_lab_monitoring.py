"""The lab's monitoring wiring without starting anything: ports, topology, missing binaries."""

from __future__ import annotations

import json

from regionops.lab import monitoring as labmon
from regionops.lab.component import Observation
from regionops.lab.config import LAB_NODES, LabConfig, LabPorts
from regionops.lab.lab import topology_document
from regionops.topology import parse_topology


def test_free_ports_allocate_every_monitoring_port_distinctly():
    ports = LabPorts.free()
    assert ports.prometheus and ports.alertmanager and ports.pushgateway
    assert set(ports.exporters) == set(LAB_NODES)
    values = list(ports.all().values())
    # postgres, apps, moto+slack+prefect+its database, exporters, prometheus+alertmanager+pushgateway, receiver,
    # the WAN relay, the etcd members' client and peer ports
    assert len(values) == len(set(values)) == 3 + 3 + 4 + 3 + 3 + 1 + 1 + 3 + 3


def test_a_lab_created_before_monitoring_loads_and_runs_without_it(tmp_path):
    old = LabConfig(lab_dir=tmp_path, ports=LabPorts.from_base(20000)).model_dump(mode="json")
    for key in ("prometheus", "alertmanager", "pushgateway", "exporters", "alerts"):
        old["ports"].pop(key)
    old.pop("monitoring")
    (tmp_path / "lab.json").write_text(json.dumps(old))
    cfg = LabConfig.load(tmp_path)
    assert cfg is not None and cfg.ports.prometheus is None
    assert not labmon.enabled(cfg)
    assert "monitoring" not in topology_document(cfg)
    assert labmon.LabMonitoring(cfg).status(Observation()) == []


def test_the_lab_topology_names_the_stack_and_each_nodes_exporter(tmp_path):
    cfg = LabConfig(lab_dir=tmp_path, ports=LabPorts.from_base(20000))
    topo = parse_topology(topology_document(cfg))
    assert topo.monitoring.prometheus_url == "http://127.0.0.1:20070"
    assert topo.monitoring.alert_receiver_url == "http://127.0.0.1:20093/alerts"
    assert topo.monitoring.max_alert_for_seconds == 2
    assert {n: node.exporter_port for n, node in topo.clusters["core"].nodes.items()} == {
        "eu-1": 20075,
        "us-1": 20076,
        "apac-1": 20077,
    }


def test_missing_binaries_are_named_with_their_packages_and_the_rest_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    cfg = LabConfig(lab_dir=tmp_path, ports=LabPorts.from_base(20000))
    assert not labmon.enabled(cfg)
    assert "monitoring" not in topology_document(cfg)  # runbooks neither silence nor publish
    [component] = labmon.LabMonitoring(cfg).status(Observation())
    assert component.required is False and not component.healthy
    assert component.detail == (
        "not installed: apt-get install prometheus prometheus-alertmanager "
        "prometheus-postgres-exporter prometheus-pushgateway"
    )
    said: list[str] = []
    started: list[str] = []
    monitoring = labmon.LabMonitoring(cfg)
    monkeypatch.setattr(monitoring, "start_process", lambda name, *a, **k: started.append(name))
    monitoring.start(said.append)
    assert started == []
    assert "prometheus is not installed" in said[0] and "apt-get install prometheus" in said[1]
