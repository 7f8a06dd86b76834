"""Region health against the real lab: healthy, and each fault reported as what it is."""

from __future__ import annotations

import pytest
from prefect import get_client

from flows.region_health import RegionHealthParams, region_health
from tests import labtools

pytestmark = pytest.mark.lab


def run(lab, **overrides):
    return region_health(RegionHealthParams(topology=str(lab.cfg.topology_path), **overrides))


def subjects(report, kind: str) -> set[str]:
    return {p.subject for p in report.problems if p.kind == kind}


def test_healthy_lab_is_reported_healthy(lab):
    report = run(lab)
    assert report.healthy, report.problems
    assert report.primary == "eu-1"
    roles = {n.node: n.role for n in report.nodes}
    assert roles == {"eu-1": "primary", "us-1": "replica", "apac-1": "replica"}
    assert all(n.streaming for n in report.nodes if n.role == "replica")
    assert len({n.timeline for n in report.nodes}) == 1  # drills move the primary and back: any one timeline
    assert {a.region: a.version for a in report.apps} == {"eu": "1.0.0", "us": "1.0.0", "apac": "1.0.0"}
    assert {b.bucket: b.region for b in report.buckets} == {
        "regionops-lab-eu": "eu-west-1",
        "regionops-lab-us": "us-east-1",
        "regionops-lab-apac": "ap-southeast-1",
    }
    assert report.writer.node == "eu-1"


def test_health_table_artifact_is_on_the_prefect_server(lab):
    run(lab)
    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts(limit=50)
    keys = {a.key for a in artifact}
    assert {"region-health-nodes", "region-health-report"} <= keys


def test_stopped_replica_is_reported_down(lab):
    labtools.clear_slack(lab)
    with labtools.node_stopped(lab, "us-1"):
        report = run(lab)
    assert not report.healthy
    assert subjects(report, "node_unreachable") == {"us-1"}
    assert "us-1" in " ".join(m["text"] for m in labtools.slack_messages(lab))


def test_broken_replication_is_reported_not_streaming(lab):
    with labtools.replication_broken(lab, "apac-1"):
        report = run(lab)
    assert subjects(report, "replica_not_streaming") == {"apac-1"}
    assert "node_unreachable" not in report.problem_kinds()


def test_lagging_replica_is_reported_lagging(lab):
    with labtools.replay_paused(lab, "us-1", wal_bytes=2 << 20):
        report = run(lab, max_lag_bytes=512 * 1024)
    assert subjects(report, "replica_lagging") == {"us-1"}
    lag = next(n.lag_bytes for n in report.nodes if n.node == "us-1")
    assert lag > 512 * 1024


def test_app_down_is_reported(lab):
    with labtools.process_stopped(lab, "app-apac"):
        report = run(lab)
    assert subjects(report, "app_down") == {"app apac"}
    assert report.problem_kinds() == {"app_down"}


def test_writer_record_at_a_replica_is_reported(lab):
    with labtools.writer_at(lab, "us-1"):
        report = run(lab)
    assert report.problem_kinds() == {"writer_not_primary"}
    assert report.writer.node == "us-1"
    assert "us-1, which is not the primary" in report.problems[0].message


def test_slack_down_does_not_fail_the_runbook(lab):
    with labtools.process_stopped(lab, "slack-sink"), labtools.writer_at(lab, "apac-1"):
        state = region_health(RegionHealthParams(topology=str(lab.cfg.topology_path)), return_state=True)
    assert state.is_completed(), state
    report = state.result()
    assert report.problem_kinds() == {"writer_not_primary"}


def test_a_slot_that_retains_too_much_wal_is_reported_with_node_slot_and_bytes(lab, tmp_path):
    import yaml

    # A tiny threshold (24 MiB) in a copy of the lab's topology, and a slot nobody consumes.
    doc = yaml.safe_load(lab.cfg.topology_path.read_text())
    doc.setdefault("monitoring", {}).setdefault("thresholds", {})["slot_retained_bytes"] = 24 * 1024 * 1024
    topo = tmp_path / "topology.yaml"
    topo.write_text(yaml.safe_dump(doc))
    primary = labtools.sql(lab, "eu-1", "postgres")
    primary.query("SELECT pg_create_physical_replication_slot('health_test_slot', true)")
    try:
        for _ in range(3):  # three WAL segments (48 MiB) past the slot's restart_lsn
            primary.query("SELECT pg_logical_emit_message(false, 'regionops-test', 'x'), pg_switch_wal()")
        report = region_health(RegionHealthParams(topology=str(topo), notify=False))
    finally:
        primary.query("SELECT pg_drop_replication_slot('health_test_slot')")
    assert subjects(report, "slot_retaining_wal") == {"eu-1/health_test_slot"}  # the streaming slots are fine
    message = next(p.message for p in report.problems if p.kind == "slot_retaining_wal")
    retained = int(message.split(" retains ")[1].split(" bytes")[0])
    assert retained >= 32 * 1024 * 1024 and "inactive" in message and "more than 24.0 MiB" in message
    assert "slot_keep_unlimited" not in {p.kind for p in report.problems}  # the lab caps slots
