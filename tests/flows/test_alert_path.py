"""The real alert path, end to end: fault -> postgres_exporter -> Prometheus -> Alertmanager ->
alert receiver -> Prefect event -> deployment trigger -> run served by `prefect serve`.

One lab of its own with the whole stack (tests/alert_path_tools.py), made with
`regionops lab up` and removed with `regionops lab down --purge` (which must leave no
process and no port); the tests run in order and each leaves the cluster healthy for the
next (the primary moves eu-1 -> us-1 by switchover, then by failover to the best replica):

0. `lab status --json`: every component healthy, the workers online, the etcd members
   seeing a leader; region health shows what Prometheus has firing;
1. a planned switchover silences the alerts it causes: no failover run;
1b. a 3 s freeze of the primary (SIGSTOP, then SIGCONT) fires no primary-down alert and
   starts no run: the conditions a stall meets wait 5 s in the lab;
2. a stopped replica: exactly one resync run, which brings it back;
3. the receiver is down when Alertmanager posts: Alertmanager retries, one resync run;
4. the primary is killed: the refusing-primary condition fires (the fast one), the storm
   starts exactly one failover run, which completes;
   Slack has the alert and the run's thread.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from regionops.fault_injectors import fault_injector_for
from regionops.lab import pglab
from regionops.lab.config import LAB_CLUSTER
from regionops.lab.lab import Lab
from regionops.waiting import poll_until
from tests import ha_tools as ha
from tests.alert_path_tools import Http, lab_cli, monitored_lab, names, wait_steady

pytestmark = pytest.mark.lab

QUIET = 6  # seconds without a new run: three times the lab's `for` plus group wait and a trigger
STALL = 3.0  # seconds a primary is frozen without being called down (issue 17)


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[Lab, Http]]:
    with monitored_lab() as lab:
        http = Http(lab)
        wait_steady(http)
        yield lab, http


def run_counts(http: Http) -> dict[str, int]:
    return {name: len(http.runs(name)) for name in ("failover", "replica-resync")}


def test_cli_status_reports_every_component_healthy_with_its_workers_and_quorum_members(stack):
    lab, _ = stack
    status = lab_cli("lab", "status", "--json", lab_dir=lab.cfg.lab_dir)
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    # 11 components + 3 postgres_exporters, Prometheus, Alertmanager, Pushgateway + 3 regional workers
    # + 3 node-step executors + 3 etcd members.
    assert doc["healthy"] and len(doc["components"]) == 27, [c for c in doc["components"] if not c["healthy"]]
    workers = {c["name"]: c for c in doc["components"] if c["name"].startswith("worker ")}
    assert sorted(workers) == ["worker apac", "worker eu", "worker us"]
    assert all(w["healthy"] and "online" in w["detail"] for w in workers.values())
    members = {c["name"]: c for c in doc["components"] if c["name"].startswith("etcd ")}
    assert sorted(members) == ["etcd apac", "etcd eu", "etcd us"]
    assert all(m["healthy"] and "sees a leader" in m["detail"] for m in members.values())


def test_region_health_reports_what_prometheus_has_firing(stack):
    lab, http = stack
    shown = {c.name: c.detail for c in lab.status().components}
    assert f"UI at {http.prometheus}" in shown["prometheus"] and "of 7 targets up" in shown["prometheus"]
    assert f"UI at {http.alertmanager}" in shown["alertmanager"]
    assert all(shown[f"postgres_exporter {n}"] == "pg_up 1" for n in ("eu-1", "us-1", "apac-1"))
    # A fresh lab has never been backed up: once the rule's `for` has passed, Prometheus fires
    # BackupTooOld (waited for: on a loaded machine the first evaluations come late).
    poll_until(lambda: http.firing("BackupTooOld"), timeout=30, interval=0.3, what="BackupTooOld to fire in Prometheus")
    run = http.wait_finished(http.start_run("region-health", {"topology": str(lab.cfg.topology_path)}))
    assert run["state_type"] == "COMPLETED", run["state"]
    artifacts = http.client.post(
        f"{http.prefect}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}
    ).json()
    report = " ".join(str(a["data"]) for a in artifacts)
    # Region health reports what Prometheus has firing.
    assert f"Prometheus at {http.prometheus} has" in report and "BackupTooOld" in report, report[:2000]


def test_a_planned_switchover_silences_its_alerts_and_starts_no_failover(stack):
    lab, http = stack
    before = run_counts(http)
    run_id = http.start_run("switchover", {"topology": str(lab.cfg.topology_path), "target": "us-1"})
    run = http.wait_finished(run_id)
    assert run["state_type"] == "COMPLETED", run["state"]
    ha.expect_layout(lab, "us-1")
    texts = " ".join(m["text"] for m in http.slack_messages())
    assert 'silenced {environment="lab", cluster="core"' in texts.replace("\\", "")
    # The silence was lifted (expired), not left to hide the next real problem.
    states = {s["status"]["state"] for s in http.silences()}
    assert states == {"expired"}, http.silences()
    http.assert_quiet(before, QUIET)


def test_a_3s_stall_of_the_primary_fires_no_primary_down_and_starts_no_run(stack):
    lab, http = stack
    wait_steady(http)
    before = run_counts(http)
    faults = fault_injector_for(lab.topology())
    # The switchover above made us-1 the primary.
    faults.inject("primary-freeze", LAB_CLUSTER, "us-1")
    try:
        time.sleep(STALL / 2)
        # The stall is real: the postmaster is stopped by a signal.  (Whether a scrape falls
        # inside it depends on the scrape phase, so Prometheus may or may not have seen it.)
        assert pglab.pgctl(lab.cfg, "us-1").is_frozen()
        time.sleep(STALL / 2)
    finally:
        faults.resume("primary-freeze", LAB_CLUSTER, "us-1")
    # Nothing fired: `for` outlasts the stall.
    http.assert_quiet(before, QUIET)
    fired = http.query('max_over_time(ALERTS{alertname="PostgresPrimaryDown", alertstate="firing"}[30s])')
    assert fired == [], fired
    ha.expect_layout(lab, "us-1", timeout=30)


def test_a_stopped_replica_starts_one_resync_that_brings_it_back(stack):
    lab, http = stack
    wait_steady(http)
    before = run_counts(http)
    ha.crash(lab, "apac-1")
    poll_until(
        lambda: http.firing("PostgresReplicationBroken"),
        timeout=30,
        interval=0.3,
        what="PostgresReplicationBroken to fire in Prometheus",
    )
    runs = http.wait_runs("replica-resync", before["replica-resync"] + 1)
    resync = runs[-1]
    assert resync["parameters"]["params"]["node"] == "apac-1"
    assert http.wait_finished(resync["id"])["state_type"] == "COMPLETED"
    ha.expect_layout(lab, "us-1", timeout=30)
    http.assert_quiet({**before, "replica-resync": before["replica-resync"] + 1}, QUIET)


def test_an_alert_sent_while_the_receiver_is_down_is_delivered_when_it_is_back(stack):
    lab, http = stack
    wait_steady(http)
    before = run_counts(http)
    failed = http.failed_webhook_notifications()
    lab.stop_process("alert-receiver")
    try:
        ha.crash(lab, "eu-1")
        poll_until(
            lambda: http.failed_webhook_notifications() > failed,
            timeout=30,
            interval=0.3,
            what="Alertmanager to fail delivering to the stopped receiver",
        )
        assert run_counts(http) == before
    finally:
        lab.alerts.start(lambda m: None)
    runs = http.wait_runs("replica-resync", before["replica-resync"] + 1, timeout=60)
    assert runs[-1]["parameters"]["params"]["node"] == "eu-1"
    assert http.wait_finished(runs[-1]["id"])["state_type"] == "COMPLETED"
    ha.expect_layout(lab, "us-1", timeout=30)
    http.assert_quiet({**before, "replica-resync": before["replica-resync"] + 1}, QUIET)


def test_a_killed_primary_starts_exactly_one_failover_which_completes(stack):
    lab, http = stack
    wait_steady(http)
    before = run_counts(http)
    ha.crash(lab, "us-1")
    # The exporter answers and the database refuses: the fast (2 s) condition fires.
    poll_until(
        lambda: any(a.get("condition") == "primary-refuses" for a in http.firing("PostgresPrimaryDown")),
        timeout=30,
        interval=0.3,
        what="PostgresPrimaryDown (condition primary-refuses) to fire in Prometheus",
    )
    [failover] = http.wait_runs("failover", before["failover"] + 1)[before["failover"] :]
    assert failover["parameters"]["params"]["cluster"] == "core"
    assert failover["parameters"]["params"]["reason"].startswith("alert PostgresPrimaryDown")
    done = http.wait_finished(failover["id"], timeout=120)
    assert done["state_type"] == "COMPLETED", done["state"]
    # The best replica (eu-1, priority 100) is primary and takes writes; us-1 stays fenced.
    assert ha.layout(lab) == {"eu-1": "primary", "us-1": "down", "apac-1": "replica of eu-1"}
    assert ha.write_rows(lab, 1, region="apac")
    # The whole storm (both primary-down conditions, replica alerts while no primary) made one run.
    http.assert_quiet({**before, "failover": before["failover"] + 1}, QUIET)
    assert len(http.runs("failover")) == before["failover"] + 1, names(http.runs("failover"))
    # Slack: Alertmanager's alert and the failover run's thread.
    messages = http.slack_messages()
    alert_titles = [a["title"] for m in messages for a in m.get("attachments") or []]
    assert any("PostgresPrimaryDown" in t and "FIRING" in t for t in alert_titles), alert_titles
    roots = [m for m in messages if "Failover of core" in m["text"] and not m.get("thread_ts")]
    assert len(roots) == 1, [m["text"][:80] for m in messages]
    replies = [m["text"] for m in messages if m.get("thread_ts") == roots[0]["ts"]]
    assert any("promoted" in r for r in replies), replies
