"""DR drills on the real lab: faults, recovery, RTO/RPO from the canary's writes, rollback, trend.

The drills run on the session lab (the alert path needs its served deployments and the
alert receiver) and each ends with the original layout restored: eu-1 primary, both
replicas streaming from it.  Every test checks that before it hands the lab on.
"""

from __future__ import annotations

from datetime import UTC

import pytest

from flows.dr_drill import DrillParams, dr_drill, trend_key
from regionops.drivers.canary import canary_rows
from tests import ha_tools as ha

pytestmark = pytest.mark.lab


def _params(lab, **kw) -> DrillParams:
    return DrillParams(topology=str(lab.cfg.topology_path), confirmation_seconds=2, **kw)


def _trend_rows(cluster: str = "core") -> int:
    import json

    from prefect.artifacts import Artifact

    art = Artifact.get(trend_key(cluster))
    if art is None:
        return 0
    data = art.data if isinstance(art.data, list) else json.loads(art.data)
    return len(data)


def test_planned_switchover_drill_under_live_writes_loses_nothing_and_restores_the_layout(lab):
    ha.expect_layout(lab, "eu-1")
    rows_before = _trend_rows()
    # The application keeps writing through the us app every 20 ms, as it does in production:
    # the consistency checks must compare every node at one common point, not fail on it.
    with ha.watching_primaries(lab) as watch, ha.writing(lab, "us", interval=0.02) as app:
        state = dr_drill(_params(lab, scenario="planned-switchover", node="us-1"), return_state=True)
        result = state.result()
    assert watch.looks > 20 and not watch.seen_two, watch.seen_two  # never two writable primaries
    assert len(app.acked) > 100, f"the application writer got only {len(app.acked)} writes acknowledged"
    for check in (result.consistency, result.final_consistency):
        assert check is not None and check.ok, check
        # the check held the application's writes for an instant only
        assert check.point is not None and check.point.held_ms < 1000, check.point
    # a planned switchover's RTO is its write outage, not the time to the next acknowledged write
    assert result.measurement.rto_seconds == result.measurement.unavailable_seconds
    assert result.recovery_ok, result.recovery
    assert result.new_primary == "us-1"
    m = result.measurement
    assert m is not None and m.rpo_rows == 0 and m.rto_seconds is not None
    # independently: every write the canary saw acknowledged is on the new primary (and on eu-1 now)
    on_primary = canary_rows(lab.topology(), "core", "eu-1", result.canary_run_id)
    assert set(result.acknowledged) <= on_primary and len(result.acknowledged) >= 10
    assert result.consistency is not None and result.consistency.ok, result.consistency
    assert result.rollback_ok and result.steady_after and result.final_consistency.ok
    assert result.ok, result.sentence()
    ha.expect_layout(lab, "eu-1")
    assert ha.writer(lab) == "eu-1"
    report = ha.report_markdown(ha.run_id(state))
    assert "RTO" in report and "RPO" in report and "pass" in report
    assert _trend_rows() == rows_before + 1


def test_primary_crash_drill_through_the_alert_path_measures_what_was_really_lost(lab):
    from datetime import datetime

    from regionops.runbook.triggered_runs import runs_started_since

    ha.expect_layout(lab, "eu-1")
    started = datetime.now(UTC)
    with ha.watching_primaries(lab) as watch:
        state = dr_drill(_params(lab, scenario="primary-crash", recovery_path="alert"), return_state=True)
        result = state.result()
    assert watch.looks > 20 and not watch.seen_two, watch.seen_two
    # the alert started exactly one failover run, which promoted a replica
    failovers = [
        r
        for r in runs_started_since("failover", started)
        if (r.parameters.get("params") or {}).get("cluster") == "core"
    ]
    assert len(failovers) == 1, [r.name for r in failovers]
    assert result.recovery_ok and failovers[0].name in (result.recovery or "")
    assert result.new_primary in ("us-1", "apac-1")
    # RPO as reported equals the acknowledged writes truly absent, counted here on the primary
    m = result.measurement
    assert m is not None and m.rto_seconds is not None and m.rto_seconds > 0
    present = canary_rows(lab.topology(), "core", "eu-1", result.canary_run_id)
    absent = set(result.acknowledged) - present
    assert m.rpo_rows == len(absent)
    assert result.consistency is not None and result.consistency.ok
    # the rollback rewound eu-1 and switched back; the steady state holds again
    assert result.rollback_ok and result.steady_after, result.rollback
    ha.expect_layout(lab, "eu-1")
    assert ha.writer(lab) == "eu-1"
    assert "eu-1" not in ha.fences(lab)
    assert "DR drill primary-crash on core" in ha.slack_texts(lab)


def test_dry_run_checks_and_plans_but_injects_nothing(lab):
    ha.expect_layout(lab, "eu-1")
    result = dr_drill(_params(lab, scenario="replica-loss", dry_run=True))
    assert result.dry_run and result.ok and result.target == "apac-1"
    assert any("inject replica-loss into apac-1" in step for step in result.plan)
    assert result.measurement is None and not result.acknowledged
    ha.expect_layout(lab, "eu-1")
    assert (lab.cfg.data_dir("apac-1") / "PG_VERSION").exists()


def test_a_fault_that_cannot_be_injected_changes_nothing_and_says_why(lab, tmp_path):
    import yaml

    from regionops.errors import PreconditionFailed

    doc = yaml.safe_load(lab.cfg.topology_path.read_text())
    doc["drills"] = {"faults": {"driver": "command", "commands": {"primary-crash": "false"}}}
    topo = tmp_path / "topology.yaml"
    topo.write_text(yaml.safe_dump(doc))
    ha.expect_layout(lab, "eu-1")
    state = dr_drill(DrillParams(topology=str(topo), scenario="primary-crash"), return_state=True)
    assert state.is_failed()
    with pytest.raises(PreconditionFailed, match="exited 1"):
        state.result()
    ha.expect_layout(lab, "eu-1")
    assert ha.writer(lab) == "eu-1"
    assert "refused" in ha.report_markdown(ha.run_id(state))

    # and a topology without any command for the fault is refused before the canary starts
    doc["drills"] = {"faults": {"driver": "command"}}
    topo.write_text(yaml.safe_dump(doc))
    state = dr_drill(DrillParams(topology=str(topo), scenario="region-outage"), return_state=True)
    with pytest.raises(PreconditionFailed, match="no command for it"):
        state.result()
    ha.expect_layout(lab, "eu-1")


def test_cancelling_a_drill_mid_action_leaves_one_writable_primary_and_resync_repairs_the_rest(lab):
    from prefect.deployments import run_deployment

    from flows.replica_resync import ResyncParams, replica_resync
    from flows.switchover import SwitchoverParams, switchover
    from regionops.lab import pglab
    from regionops.waiting import poll_until

    ha.expect_layout(lab, "eu-1")
    with ha.watching_primaries(lab) as watch:
        run = run_deployment(
            "dr-drill/lab",
            parameters={
                "params": {
                    "topology": str(lab.cfg.topology_path),
                    "scenario": "primary-crash",
                    "confirmation_seconds": 3,
                }
            },
            timeout=0,
        )
        # When the fault is in (eu-1 killed), the run is cancelled from the UI/API
        poll_until(
            lambda: not pglab.pgctl(lab.cfg, "eu-1").is_running(),
            timeout=90,
            interval=0.1,
            what="the drill to kill eu-1",
        )
        ha.cancel_run(run.id, "the drill run")
        # Then exactly one node takes writes, and the writer record names it
        layout = ha.layout(lab)
        writable = [n for n in layout if layout[n] == "primary" and not ha.state(lab, n).read_only]
        assert len(writable) == 1, layout
        assert ha.writer(lab) == writable[0]
        assert "DR drill cancelled" in ha.slack_texts(lab)
    assert watch.looks > 10 and not watch.seen_two, watch.seen_two  # not during the drill, nor its rescue
    # The next drill's steady state names what is left (if anything); resync repairs it
    nxt = dr_drill(_params(lab, scenario="planned-switchover", dry_run=True), return_state=True)
    if not nxt.is_completed():
        assert "replica-resync" in str(nxt.message) or "repair" in ha.report_markdown(ha.run_id(nxt))
    assert replica_resync(ResyncParams(topology=str(lab.cfg.topology_path), lock_wait_seconds=30)).ok
    if writable[0] != "eu-1":
        assert switchover(SwitchoverParams(topology=str(lab.cfg.topology_path), target="eu-1", lock_wait_seconds=30)).ok
    ha.expect_layout(lab, "eu-1", timeout=30)
    assert dr_drill(_params(lab, scenario="planned-switchover", dry_run=True)).ok


def test_a_drill_whose_steady_state_fails_does_not_start_and_names_the_repair(lab):
    from regionops.errors import PreconditionFailed
    from tests import labtools

    ha.expect_layout(lab, "eu-1")
    with labtools.replication_broken(lab, "apac-1"):
        state = dr_drill(_params(lab, scenario="primary-crash"), return_state=True)
        with pytest.raises(PreconditionFailed, match="steady state does not hold.*apac-1.*repair: replica-resync"):
            state.result()
        assert pglab_running(lab, "eu-1")  # nothing was injected
    ha.expect_layout(lab, "eu-1")


def pglab_running(lab, node: str) -> bool:
    from regionops.lab import pglab

    return pglab.pgctl(lab.cfg, node).is_running()


def test_a_drill_refuses_to_inject_while_another_runbook_holds_the_cluster_lock(lab):
    """A drill that injected while a paused switchover held the lock left the cluster with no primary."""
    from regionops.errors import PreconditionFailed
    from regionops.runbook.locks import cluster_lock

    ha.expect_layout(lab, "eu-1")
    with cluster_lock("core", "switchover"):
        state = dr_drill(_params(lab, scenario="primary-crash"), return_state=True)
    assert state.is_failed()
    with pytest.raises(PreconditionFailed, match="dr-drill refused: another runbook is changing cluster core"):
        state.result()
    ha.expect_layout(lab, "eu-1")  # nothing was injected: eu-1 was never killed
    assert ha.writer(lab) == "eu-1"
    assert "refused" in ha.report_markdown(ha.run_id(state))
