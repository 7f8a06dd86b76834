"""Shared fences and a fence that holds when the old primary comes back.

One private cluster for the module.  The tests run in order:

1. a fence recorded through one topology (state directory A) refuses a promotion
   candidate and a resync source in runs of another topology (state directory B): the
   fence lives in the cluster's home bucket, not in a runbook's local state; unfence by hand;
2. a frozen primary whose machine the failover cannot reach (no SQL, no disk) is fenced by
   record only; resumed, it is a writable primary beside the new one (split brain), and the
   next region health fences it at once and says SPLIT BRAIN; resync rebuilds it and clears
   the fence, a switchover puts eu-1 back;
3. a frozen primary the failover can reach on disk is killed and fenced before anything is
   promoted: resumed, it takes no write, and region health finds it fenced and not writable;
4. the fence step on a primary that answers: read-only over SQL first, then stopped.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from flows.failover import FailoverParams, _fence, failover
from flows.region_health import RegionHealthParams, region_health
from flows.replica_resync import ResyncParams, replica_resync
from flows.switchover import SwitchoverParams, switchover
from regionops import cli
from regionops.fault_injectors import fault_injector_for
from regionops.ha.fencing import FenceMarker, Fencer, FenceStore
from regionops.lab.config import LAB_CLUSTER
from regionops.runbook.reporting import RunReporter
from regionops.waiting import poll_until
from tests import ha_tools as ha
from tests import labtools

pytestmark = pytest.mark.lab

FAST = {"grace_seconds": 1.0, "probes": 2, "probe_timeout_seconds": 1, "lock_wait_seconds": 15}
# A frozen primary is called down once every replica's receiver has lost it (its 8 s
# wal_receiver_timeout), so its failover needs the default 10 s ceiling, not FAST's 1 s.
FROZEN = {**FAST, "grace_seconds": 10.0}


@pytest.fixture(scope="module")
def cluster(lab):
    with ha.private_cluster() as private:
        ha.expect_layout(private, "eu-1", timeout=20)
        yield private


def other_topology(lab, tmp_path: Path, *, hide_data_dir_of: str | None = None) -> str:
    """The lab's topology with its own state directory, as a worker on another host sees it.

    ``hide_data_dir_of``: that node's data directory is not on this host (a path that
    does not exist), so node-local steps cannot touch it.
    """
    doc = yaml.safe_load(lab.cfg.topology_path.read_text())
    doc["state_dir"] = str(tmp_path / "other-state")
    if hide_data_dir_of:
        doc["clusters"][LAB_CLUSTER]["nodes"][hide_data_dir_of]["data_dir"] = str(tmp_path / "not-on-this-host")
    path = tmp_path / "other-topology.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert doc["state_dir"] != lab.topology().state_dir
    return str(path)


def _refusal(state) -> str:
    assert state.is_failed(), state
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the refusal is the point
        return str(exc)
    raise AssertionError("a failed state must carry the error")


def test_a_fence_recorded_through_one_state_dir_refuses_candidates_and_sources_in_another(cluster, tmp_path, capsys):
    lab = cluster
    other = other_topology(lab, tmp_path)
    by = Fencer(runbook="failover", run_name="test-fencer", worker_region="eu", worker_host="worker-eu")
    store = FenceStore.for_topology(lab.topology())
    for node in ("apac-1", "eu-1"):
        assert store.mark(FenceMarker(cluster=LAB_CLUSTER, node=node, stopped=False, reason="test", by=by)).created
    try:
        # Promotion candidate: a switchover to apac-1 and a failover that may only pick apac-1.
        refused = _refusal(
            switchover(SwitchoverParams(topology=other, target="apac-1", lock_wait_seconds=15), return_state=True)
        )
        assert "apac-1 is fenced" in refused
        ha.crash(lab, "eu-1")
        try:
            refused = _refusal(
                failover(FailoverParams(topology=other, exclude_regions=["us"], **FAST), return_state=True)
            )
            assert "fenced" in refused and "apac-1" in refused
        finally:
            ha.start(lab, "eu-1")
        # Resync source: the primary eu-1 is fenced, so no replica may be rebuilt from it.
        refused = _refusal(replica_resync(ResyncParams(topology=other, lock_wait_seconds=15), return_state=True))
        assert "the primary eu-1 is fenced, so it cannot be the source" in refused
        assert "by failover run test-fencer on worker-eu in region eu" in refused
        assert ha.writer(lab) == "eu-1"
        # Unfence is deliberate: the node's name twice and a reason.
        assert (
            cli.main(["fence", "clear", "--topology", other, "--node", "eu-1", "--reason", "test", "--confirm", "us-1"])
            == 1
        )
        assert "not confirmed" in capsys.readouterr().err and "eu-1" in ha.fences(lab)
    finally:
        for node in ("apac-1", "eu-1"):
            if node in ha.fences(lab):
                assert (
                    cli.main(
                        [
                            "fence",
                            "clear",
                            "--topology",
                            other,
                            "--node",
                            node,
                            "--reason",
                            "the test is over",
                            "--confirm",
                            node,
                        ]
                    )
                    == 0
                )
    out = capsys.readouterr().out
    assert "cleared the fence of eu-1 (the test is over) by regionops fence clear" in out
    assert ha.fences(lab) == {}
    assert "Fence of eu-1 (core) cleared by hand" in ha.slack_texts(lab)
    ha.expect_layout(lab, "eu-1", timeout=30)


def test_an_old_primary_that_comes_back_writable_is_fenced_by_region_health_as_split_brain(cluster, tmp_path):
    lab = cluster
    ha.expect_layout(lab, "eu-1", timeout=30)
    # The failover runs on a worker that sees neither eu-1's disk nor (it is frozen) its SQL.
    remote = other_topology(lab, tmp_path, hide_data_dir_of="eu-1")
    faults = fault_injector_for(lab.topology())
    labtools.clear_slack(lab)
    with ha.writing(lab, "us") as writes:
        faults.inject("primary-freeze", LAB_CLUSTER, "eu-1")
        try:
            result = failover(FailoverParams(topology=remote, **FROZEN))
        finally:
            faults.resume("primary-freeze", LAB_CLUSTER, "eu-1")
        resumed = time.monotonic()
        new = result.new_primary
        fence = result.fence
        assert fence is not None and not fence.read_only and not fence.stopped and fence.record.created
        assert "could not be made read-only" in fence.sentence() and "fenced by record only" in fence.sentence()
        # Resumed, eu-1 is again a primary that takes writes: the split brain is real.
        assert ha.state(lab, "eu-1").role == "primary" and not ha.state(lab, "eu-1").read_only
        report = region_health(RegionHealthParams(topology=str(lab.cfg.topology_path)))
        poll_until(lambda: writes.first_ack_on(new, resumed), timeout=10, what=f"a write on {new}")
    assert "split_brain" in report.problem_kinds() and report.primary == new
    assert any(a.startswith("fenced writes on eu-1") for a in report.actions), report.actions
    assert any("stopped eu-1" in a for a in report.actions), report.actions
    assert not ha.state(lab, "eu-1").reachable
    assert (lab.cfg.data_dir("eu-1") / "standby.signal").exists()  # a restart would be read-only
    assert "SPLIT BRAIN in core: fenced eu-1 accepted writes" in ha.slack_texts(lab)
    assert ha.writer(lab) == new
    # A fence by record cannot stop a request already inside eu-1 when it froze: resumed, it may
    # complete.  The writer is sequential, so that is at most one; every later write went to the
    # node the writer record names.  This is the loss the SQL fence and the stop exist to prevent.
    late = [(round(t - resumed, 2), i) for t, i, node in writes.acked if node == "eu-1" and t >= resumed]
    assert len(late) <= 1, late

    # Resync rebuilds it (pg_rewind) and clears the fence, saying who had fenced it.
    resync = replica_resync(ResyncParams(topology=str(lab.cfg.topology_path), node="eu-1", lock_wait_seconds=15))
    assert resync.ok and "eu-1" not in ha.fences(lab)
    assert any("cleared the fence of eu-1" in s and "by replica-resync" in s for s in resync.steps), resync.steps
    assert switchover(SwitchoverParams(topology=str(lab.cfg.topology_path), target="eu-1", lock_wait_seconds=15)).ok
    ha.expect_layout(lab, "eu-1", timeout=30)


def test_a_frozen_primary_is_fenced_before_promotion_and_takes_no_write_when_resumed(cluster):
    lab = cluster
    ha.expect_layout(lab, "eu-1", timeout=30)
    topology = str(lab.cfg.topology_path)
    faults = fault_injector_for(lab.topology())
    with ha.writing(lab, "us") as writes, ha.watching_primaries(lab) as watch:
        faults.inject("primary-freeze", LAB_CLUSTER, "eu-1")
        try:
            result = failover(FailoverParams(topology=topology, **FROZEN))
            new = result.new_primary
            took_writes = poll_until(lambda: writes.first_ack_on(new, 0), timeout=10, what=f"a write on {new}")
        finally:
            faults.resume("primary-freeze", LAB_CLUSTER, "eu-1")
        time.sleep(1)  # the writers keep writing after the resume
    assert watch.looks > 1 and not watch.seen_two, watch.seen_two
    assert not [row for row in writes.acked if row[2] == "eu-1" and row[0] >= took_writes]
    fence = result.fence
    assert fence is not None and fence.stopped and fence.record.created
    assert any("killed eu-1" in note for note in fence.notes), fence.notes
    # The fence was recorded before the promotion, and the record says who and why.
    fenced_at = next(i for i, s in enumerate(result.steps) if s.startswith("fenced eu-1"))
    promoted_at = next(i for i, s in enumerate(result.steps) if s.startswith(f"promoted {new}"))
    assert fenced_at < promoted_at
    marker = ha.fences(lab)["eu-1"]
    assert marker.by is not None and marker.by.runbook == "failover" and marker.by.run_id
    assert ha.writer(lab) == new
    report = region_health(RegionHealthParams(topology=topology))
    row = next(r for r in report.nodes if r.node == "eu-1")
    assert row.fenced and not row.reachable
    assert "split_brain" not in report.problem_kinds() and not report.actions and report.primary == new


def test_an_old_primary_that_answers_is_made_read_only_before_it_is_stopped(cluster):
    """The failover's fence step on a primary that answers (a freeze that ended just before it).

    Last in the module: it leaves the private cluster without a primary.
    """
    lab = cluster
    topology = lab.topology()
    old = next(n for n in ha.layout(lab) if ha.layout(lab)[n] == "primary")
    reporter = RunReporter(topology, "failover", "fence step", slack=False)
    states = {old: ha.state(lab, old)}
    db = ha.sql(lab, old)
    fence = _fence(topology, LAB_CLUSTER, old, states, reporter)
    assert fence.read_only and fence.stopped and fence.record.created, fence.sentence()
    assert fence.notes[0].startswith(f"fenced writes on {old}: new transactions are read-only")
    assert fence.notes[1].startswith(f"stopped {old}")  # stopped only after writes were refused
    assert not ha.state(lab, old).reachable and not db.ping()
    marker = ha.fences(lab)[old]
    assert marker.read_only and marker.stopped and marker.last_lsn == states[old].current_lsn
