"""Switchover, failover and replica resync as flows: refusals, dry runs, approval, repairs.

Every refusal is asserted twice: the run fails saying why, and nothing changed (roles,
replication, the writer record, fence markers, the old primary still writable).  One
private lab for the module; each test leaves eu-1 primary with both replicas streaming.
"""

from __future__ import annotations

import contextvars
import json
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from prefect.flow_runs import resume_flow_run

from flows.failover import FailoverParams, failover
from flows.replica_resync import ResyncParams, replica_resync
from flows.switchover import SwitchoverParams, switchover
from regionops import cli
from regionops.fault_injectors import fault_injector_for
from regionops.lab import pglab
from regionops.lab.config import LAB_CLUSTER, LAB_NODES
from regionops.waiting import poll_until
from tests import ha_tools as ha
from tests import labtools

pytestmark = pytest.mark.lab

# Small confirmation window so refusals are quick; the decision logic is unit-tested.
FAST = {"grace_seconds": 1.0, "probes": 2, "probe_timeout_seconds": 1}


@pytest.fixture(scope="module")
def ha_lab(lab):
    """This module's own cluster; runs go to the session lab's Prefect server (see private_cluster)."""
    with ha.private_cluster() as cluster:
        yield cluster


@pytest.fixture
def cluster(ha_lab):
    """The module's cluster in its steady state, checked before and after each test."""
    ha.expect_layout(ha_lab, "eu-1", timeout=20)
    yield ha_lab
    ha.expect_layout(ha_lab, "eu-1", timeout=30)


def _params(lab, **kw):
    # The cluster lock lives on the session's Prefect server, shared with other modules'
    # runs: wait a little for a stray one instead of flaking (the lock test sets 0).
    return {"topology": str(lab.cfg.topology_path), "lock_wait_seconds": 15, **kw}


def unchanged(lab, *, down: tuple[str, ...] = ()) -> None:
    """Nothing a failover or switchover would change has changed."""
    shape = ha.layout(lab)
    for node in LAB_NODES:
        if node in down:
            assert shape[node] == "down", shape
        elif node == "eu-1":
            assert shape[node] == "primary", shape
        else:
            assert shape[node] in ("replica of eu-1", "replica (not streaming)"), shape
    assert ha.writer(lab) == "eu-1"
    assert ha.fences(lab) == {}
    assert not (lab.cfg.data_dir("eu-1") / "standby.signal").exists()


@contextmanager
def primary_crashed(lab) -> Iterator[None]:
    """eu-1 crashed (immediate stop); restarted afterwards, when it recovers as the primary."""
    ha.crash(lab, "eu-1")
    try:
        yield
    finally:
        ha.start(lab, "eu-1")


def in_thread(fn) -> threading.Thread:
    """Start ``fn`` in a thread that sees this test's Prefect settings (context variables)."""
    thread = threading.Thread(target=contextvars.copy_context().run, args=(fn,), daemon=True)
    thread.start()
    return thread


def _refusal(state) -> str:
    assert state.is_failed(), state
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the refusal is the point
        return f"{type(exc).__name__}: {exc}"
    raise AssertionError("a failed state must carry the error")


# --- failover refuses, changing nothing ----------------------------------------------------


def test_failover_refuses_when_the_primary_is_up(cluster):
    lab = cluster
    labtools.clear_slack(lab)
    state = failover(FailoverParams(**_params(lab, **FAST)), return_state=True)
    error = _refusal(state)
    assert "PreconditionFailed" in error and "eu-1 is not down: a probe reached it" in error
    assert "nothing was changed" in error
    unchanged(lab)
    assert ha.write_rows(lab, 1)  # eu-1 still takes writes
    assert "refused" in ha.slack_texts(lab)


def test_failover_dry_run_shows_the_plan_and_changes_nothing(cluster):
    lab = cluster
    with primary_crashed(lab):
        state = failover(FailoverParams(**_params(lab, dry_run=True, **FAST)), return_state=True)
        result = state.result()
        assert result.dry_run and result.old_primary == "eu-1" and result.new_primary == "us-1"
        assert any("promote us-1" in step for step in result.plan)
        assert "eu-1 is down" in result.down_reason
        unchanged(lab, down=("eu-1",))
        assert ha.state(lab, "us-1").role == "replica"
    assert "dry run" in ha.report_markdown(ha.run_id(state))


@contextmanager
def primary_frozen(lab, *, for_seconds: float | None = None) -> Iterator[None]:
    """eu-1 frozen (SIGSTOP: connections hang, its WAL senders fall silent); resumed after
    ``for_seconds`` by a timer, or when the block ends (always, so the next test finds it running)."""
    faults = fault_injector_for(lab.topology())
    faults.inject("primary-freeze", LAB_CLUSTER, "eu-1")
    timer = threading.Timer(for_seconds, lambda: faults.resume("primary-freeze", LAB_CLUSTER, "eu-1"))
    if for_seconds is not None:
        timer.start()
    try:
        yield
    finally:
        timer.cancel()
        faults.resume("primary-freeze", LAB_CLUSTER, "eu-1")


def _receiver_timeouts(lab) -> dict[str, str]:
    return {n: ha.sql(lab, n).show("wal_receiver_timeout") for n in ("us-1", "apac-1")}


def test_a_primary_frozen_for_3s_is_not_failed_over(cluster):
    """A 3 s stall: the probes fail, but the replicas still hear eu-1 (their 8 s wal_receiver_timeout)."""
    lab = cluster
    assert _receiver_timeouts(lab) == {"us-1": "8s", "apac-1": "8s"}
    with primary_frozen(lab, for_seconds=3):
        state = failover(FailoverParams(**_params(lab)), return_state=True)  # the default parameters
    error = _refusal(state)
    assert "PreconditionFailed" in error and "eu-1 is not down" in error, error
    assert "nothing was changed" in error
    unchanged(lab)
    assert ha.write_rows(lab, 1)  # eu-1 still takes writes


def test_a_frozen_primary_is_called_down_once_every_replica_has_lost_it(cluster):
    """Frozen for good: each replica's receiver times out (8 s), and that completes the evidence
    before the 10 s ceiling.  A dry run, so nothing changes."""
    lab = cluster
    with primary_frozen(lab):
        result = failover(FailoverParams(**_params(lab, dry_run=True)))
        assert result.dry_run and result.old_primary == "eu-1"
    assert "eu-1 is down" in result.down_reason and "every reachable replica has lost it" in result.down_reason
    assert "us-1" in result.down_reason and "apac-1" in result.down_reason
    unchanged(lab)


def test_failover_refuses_when_no_replica_is_healthy(cluster):
    lab = cluster
    with primary_crashed(lab):
        for node in ("us-1", "apac-1"):
            pglab.pgctl(lab.cfg, node).stop("fast")
        try:
            error = _refusal(failover(FailoverParams(**_params(lab, **FAST)), return_state=True))
            assert "no replica of core can be promoted" in error
            assert "us-1: it is unreachable" in error and "apac-1: it is unreachable" in error
            unchanged(lab, down=("eu-1", "us-1", "apac-1"))
        finally:
            for node in ("us-1", "apac-1"):
                ha.start(lab, node)


def test_a_second_failover_is_refused_while_the_first_holds_the_cluster_lock(cluster):
    lab = cluster
    with primary_crashed(lab):
        box: dict = {}
        first = in_thread(
            lambda: box.update(
                state=failover(FailoverParams(**_params(lab, require_approval=True, **FAST)), return_state=True)
            )
        )
        try:
            # The first failover confirmed the outage and waits for approval, holding the lock
            paused = ha.paused_run(lab, "failover")
            error = _refusal(failover(FailoverParams(**_params(lab, lock_wait_seconds=0, **FAST)), return_state=True))
            assert "another runbook is changing cluster core" in error and "nothing was changed" in error
            unchanged(lab, down=("eu-1",))
            # A wrong confirmation rejects the first one: it changes nothing either
            resume_flow_run(paused.id, run_input={"approver": "test", "reason": "test", "confirm": "yes"})
        finally:
            first.join(60)
        assert "ApprovalRejected" in _refusal(box["state"])
        unchanged(lab, down=("eu-1",))


def test_a_primary_down_alert_that_does_not_lead_to_a_failover_pages(cluster):
    from regionops.runbook.locks import LockLost, cluster_lock

    lab = cluster
    labtools.clear_slack(lab)
    alert = dict(page_if_no_failover=True, reason="alert PostgresPrimaryDown (test)", **FAST)
    # A run that has changed the cluster holds the lock: the failover waits for it, then gives up and pages
    with cluster_lock("core", "replica-resync") as held:
        held.mark_changed()
        error = _refusal(
            failover(FailoverParams(**_params(lab, **{**alert, "lock_wait_seconds": 2})), return_state=True)
        )
        assert "another runbook is changing cluster core" in error and "replica-resync run" in error, error
        assert "has changed the cluster" in error
    texts = ha.slack_texts(lab)
    assert "PAGE: primary-down alert on core did not lead to a failover" in texts
    assert "nothing was changed" in texts
    unchanged(lab)
    # A holder that changed nothing loses the lock to the failover, which then finds eu-1 up: a page again
    labtools.clear_slack(lab)
    with cluster_lock("core", "switchover") as held:
        error = _refusal(
            failover(FailoverParams(**_params(lab, **{**alert, "lock_wait_seconds": 0})), return_state=True)
        )
        assert "eu-1 is not down" in error, error
        with pytest.raises(LockLost, match="failover run .* took the lock"):
            held.mark_changed()
    assert "PAGE: primary-down alert on core did not lead to a failover" in ha.slack_texts(lab)
    unchanged(lab)


def test_a_cancelled_switchover_releases_the_cluster_lock_at_once(cluster):
    from prefect import get_client
    from prefect.deployments import run_deployment

    from regionops.runbook.locks import LEASE_SECONDS, lock_name

    lab = cluster

    def lock_holders() -> int:
        with get_client(sync_client=True) as client:
            return client.read_global_concurrency_limit_by_name(lock_name("core")).active_slots

    # A served switchover paused for approval holds the lock; cancelling it kills its process
    run = run_deployment(
        "switchover/lab", parameters={"params": _params(lab, target="us-1", require_approval=True)}, timeout=0
    )
    paused = ha.paused_run(lab, "switchover")
    assert paused.id == run.id and lock_holders() == 1
    ha.cancel_run(run.id, "the switchover run")
    # Its on_cancellation hook frees the lock long before the lease would expire
    poll_until(lambda: lock_holders() == 0, timeout=LEASE_SECONDS / 10, interval=0.5, what="the lock to be free")
    unchanged(lab)


def test_a_switchover_cancelled_after_stopping_the_primary_gives_it_its_writes_back(cluster):
    """Killed between stopping the old primary and promoting: no node took writes until its hook ran."""
    from prefect.deployments import run_deployment

    lab = cluster
    replica = labtools.sql(lab, "us-1")
    with ha.watching_primaries(lab) as watch:
        run = run_deployment(
            "switchover/lab",
            parameters={"params": _params(lab, target="us-1", catch_up_timeout_seconds=120)},
            timeout=0,
        )
        # Once its checks passed and it fenced eu-1, us-1 stops replaying: the run then waits in its
        # critical window (eu-1 stopped, us-1 not promoted) for the old primary's last WAL.
        poll_until(lambda: _write_fenced(lab, "eu-1"), timeout=90, interval=0.02, what="the switchover to fence eu-1")
        replica.pause_replay()
        try:
            poll_until(
                lambda: not pglab.pgctl(lab.cfg, "eu-1").is_running(),
                timeout=30,
                interval=0.1,
                what="the switchover to stop eu-1",
            )
            ha.cancel_run(run.id, "the switchover run")
            # The hook gave eu-1 back its writes: the one writable primary, named by the writer record
            poll_until(lambda: _takes_writes(lab, "eu-1"), timeout=30, interval=0.2, what="eu-1 to take writes again")
            labtools.sql(lab, "eu-1").query("CREATE TABLE IF NOT EXISTS test_after_cancel (id int)")
            assert ha.writer(lab) == "eu-1"
            assert ha.state(lab, "us-1").role == "replica"
            assert "Switchover cancelled" in ha.slack_texts(lab)
            assert "gave writes back to eu-1" in json.dumps(labtools.slack_messages(lab))  # what the hook did, said
        finally:
            replica.resume_replay()
        labtools.sql(lab, "eu-1").query("DROP TABLE test_after_cancel")
        labtools.wait_steady(lab)
    assert watch.looks > 5 and not watch.seen_two, watch.seen_two
    unchanged(lab)


def _write_fenced(lab, node: str) -> bool:
    try:
        return labtools.sql(lab, node).show("default_transaction_read_only") == "on"
    except Exception:  # noqa: BLE001 - stopping already
        return True


def _takes_writes(lab, node: str) -> bool:
    now = ha.state(lab, node)
    return now.role == "primary" and not now.read_only


def test_cli_runs_failover_by_name_and_exits_1_on_refusal(cluster, capsys):
    lab = cluster
    code = cli.main(
        ["run", "failover", "--topology", str(lab.cfg.topology_path), "--set", "grace_seconds=1", "--set", "probes=2"]
    )
    assert code == cli.EXIT_FAILED
    assert "eu-1 is not down" in capsys.readouterr().err
    unchanged(lab)


# --- switchover pre-checks and approval ------------------------------------------------------


def test_switchover_refuses_a_lagging_target_and_changes_nothing(cluster):
    lab = cluster
    with labtools.replay_paused(lab, "apac-1"):
        error = _refusal(
            switchover(SwitchoverParams(**_params(lab, target="apac-1", max_lag_bytes=1000)), return_state=True)
        )
        assert "the target apac-1 lags" in error and "WAL replay is paused on the target apac-1" in error
        unchanged(lab)
        assert labtools.sql(lab, "eu-1").show("default_transaction_read_only") == "off"


def test_switchover_dry_run_changes_nothing(cluster):
    lab = cluster
    result = switchover(SwitchoverParams(**_params(lab, dry_run=True)))
    assert result.dry_run and result.old_primary == "eu-1" and result.new_primary == "us-1"
    assert result.plan[0].startswith("make eu-1 read-only")
    unchanged(lab)


def test_switchover_waits_for_typed_approval_and_a_wrong_answer_changes_nothing(cluster):
    lab = cluster
    box: dict = {}
    run = in_thread(
        lambda: box.update(
            state=switchover(SwitchoverParams(**_params(lab, target="us-1", require_approval=True)), return_state=True)
        )
    )
    try:
        paused = ha.paused_run(lab, "switchover")
        unchanged(lab)  # paused before the first change
        resume_flow_run(
            paused.id, run_input={"approver": "test", "reason": "wrong target", "confirm": "switchover to apac-1"}
        )
    finally:
        run.join(60)
    error = _refusal(box["state"])
    assert "approval rejected by test (wrong target): expected 'switchover to us-1'" in error
    unchanged(lab)
    assert ha.write_rows(lab, 1)


@contextmanager
def unpromotable(lab, node: str) -> Iterator[None]:
    """``node``'s data directory is read-only to its server: pg_promote cannot write promote.signal.

    A real failure of the promotion step (the server reports "could not create signal
    file"), while the replica keeps replaying, which only writes into subdirectories.
    """
    data = lab.cfg.data_dir(node)
    mode = data.stat().st_mode & 0o777
    data.chmod(0o500)
    try:
        yield
    finally:
        data.chmod(mode)


def test_a_switchover_whose_promotion_fails_gives_the_old_primary_its_writes_back(cluster):
    lab = cluster
    with ha.watching_primaries(lab) as watch, ha.writing(lab, "us") as app, unpromotable(lab, "us-1"):
        state = switchover(SwitchoverParams(**_params(lab, target="us-1")), return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception) as failed:
        state.result()
    assert type(failed.value).__name__ == "RolledBack", failed.value
    assert "eu-1 is the writable primary again" in str(failed.value)
    # exactly one writable primary throughout and at the end, and the writer record names it
    assert not watch.seen_two and watch.most == 1, watch.seen_two
    ha.expect_layout(lab, "eu-1", timeout=30)
    assert ha.writer(lab) == "eu-1"
    assert labtools.sql(lab, "eu-1").show("default_transaction_read_only") == "off"
    assert ha.write_rows(lab, 1)
    # writes resumed after the rollback, and none acknowledged was lost
    assert app.acked and app.ids <= ha.row_ids(lab, "eu-1")
    report = ha.report_markdown(ha.run_id(state))
    assert "rolled back" in report and "us-1 is still a replica (not promoted)" in report


# --- replica resync ---------------------------------------------------------------------------


def test_resync_repoints_a_replica_that_follows_nobody_once_approved(cluster):
    lab = cluster
    replica = labtools.sql(lab, "apac-1", "postgres")
    replica.set_config("primary_conninfo", "host=127.0.0.1 port=1 user=postgres application_name=apac-1")
    poll_until(lambda: not ha.streams_from(lab, "apac-1", "eu-1"), timeout=15, what="apac-1 cut off")

    plan = replica_resync(ResyncParams(**_params(lab, node="apac-1", dry_run=True)))
    assert plan.dry_run and plan.repairs[0].action == "repoint"
    assert not ha.streams_from(lab, "apac-1", "eu-1")  # the dry run changed nothing

    # The approve path: the run pauses for the typed form and goes on once it is filled in right
    box: dict = {}
    run = in_thread(
        lambda: box.update(
            state=replica_resync(ResyncParams(**_params(lab, node="apac-1", require_approval=True)), return_state=True)
        )
    )
    try:
        paused = ha.paused_run(lab, "replica-resync")
        assert not ha.streams_from(lab, "apac-1", "eu-1")  # nothing changed while paused
        resume_flow_run(
            paused.id,
            run_input={"approver": "Ada Oncall", "reason": "apac-1 lost its primary", "confirm": "resync apac-1"},
        )
    finally:
        run.join(60)
    result = box["state"].result()
    assert result.ok and result.repairs[0].action == "repoint"
    assert ha.streams_from(lab, "apac-1", "eu-1")
    approval = "approved by Ada Oncall: apac-1 lost its primary (typed 'resync apac-1')"
    assert approval in ha.report_markdown(paused.id).split("## Approval")[1]
    assert approval in ha.slack_texts(lab)


def test_resync_reclones_a_replica_whose_data_directory_is_gone(cluster):
    lab = cluster
    data = lab.cfg.data_dir("apac-1")
    pglab.pgctl(lab.cfg, "apac-1").stop("fast")
    lost = data.with_name("apac-1.lost-by-test")
    data.rename(lost)
    try:
        result = replica_resync(ResyncParams(**_params(lab, node="apac-1")))
        repair = result.repairs[0]
        assert result.ok and repair.action == "reclone", repair
        assert any("re-cloned apac-1 from eu-1 with pg_basebackup" in a for a in repair.actions)
        assert ha.streams_from(lab, "apac-1", "eu-1")
        rows = ha.write_rows(lab, 2)
        poll_until(lambda: set(rows) <= ha.row_ids(lab, "apac-1"), timeout=10, what="new rows on apac-1")
    finally:
        shutil.rmtree(lost, ignore_errors=True)


def test_resync_refuses_without_a_reachable_primary(cluster):
    lab = cluster
    with primary_crashed(lab):
        error = _refusal(replica_resync(ResyncParams(**_params(lab)), return_state=True))
        assert "no reachable primary to follow" in error
        unchanged(lab, down=("eu-1",))


# --- fencing when the old primary's machine cannot be reached ----------------------------------


def test_an_unreachable_old_primary_is_fenced_by_marker_and_resync_brings_it_back(cluster):
    lab = cluster
    data = lab.cfg.data_dir("eu-1")
    hidden = data.with_name("eu-1.unreachable-by-test")
    ha.crash(lab, "eu-1")
    data.rename(hidden)  # its machine is gone: neither its server nor its disk can be reached
    try:
        result = failover(FailoverParams(**_params(lab, **FAST)))
        assert result.new_primary == "us-1" and result.fence is not None
        assert not result.fence.stopped
        assert "NOT stopped (unreachable): fenced by record only" in result.fence.sentence()
        marker = ha.fences(lab)["eu-1"]
        assert not marker.stopped and "failed over" in marker.reason
        assert "lower bound" in (result.data_loss_source or "")  # its WAL could not be read
        assert ha.writer(lab) == "us-1"
    finally:
        hidden.rename(data)
    # The machine is back: its data directory still says "primary, timeline 1" -> rewind
    resync = replica_resync(ResyncParams(**_params(lab, node="eu-1")))
    assert resync.ok and [d.action for d in resync.repairs[0].decisions] == ["rewind"]
    assert any("servers diverged" in a for a in resync.repairs[0].actions)
    assert "eu-1" not in ha.fences(lab)
    back = switchover(SwitchoverParams(**_params(lab, target="eu-1")))
    assert back.ok


# --- a failover goes first (it moves the primary: last, so the tests above see timeline 1) -------


def test_a_failover_takes_the_lock_from_a_switchover_that_waits_for_approval(cluster):
    """A primary-down failover is never refused because a run that changed nothing holds the lock."""
    lab = cluster
    labtools.clear_slack(lab)
    box: dict = {}
    waiting = in_thread(
        lambda: box.update(
            state=switchover(SwitchoverParams(**_params(lab, target="us-1", require_approval=True)), return_state=True)
        )
    )
    try:
        paused = ha.paused_run(lab, "switchover")
        with primary_crashed(lab):
            # an alert's failover (no lock wait): it takes the lock from the paused switchover
            state = failover(
                FailoverParams(
                    **_params(
                        lab,
                        lock_wait_seconds=0,
                        page_if_no_failover=True,
                        reason="alert PostgresPrimaryDown (test)",
                        **FAST,
                    )
                ),
                return_state=True,
            )
            result = state.result()
            assert result.ok and result.new_primary == "us-1", result
            report = ha.report_markdown(ha.run_id(state))
            assert "took lock regionops-cluster-core from switchover run" in report, report
            assert "has changed nothing yet" in report
            # the approval comes too late: the switchover stops at its first change, changing nothing
            resume_flow_run(
                paused.id, run_input={"approver": "test", "reason": "planned", "confirm": "switchover to us-1"}
            )
            waiting.join(60)
            error = _refusal(box["state"])
            assert "LockLost" in error and "failover run" in error and "nothing was changed" in error, error
            assert ha.writer(lab) == "us-1" and ha.state(lab, "us-1").role == "primary"
            assert "PAGE" not in ha.slack_texts(lab)  # the alert did lead to a failover
    finally:
        waiting.join(60)
    # put eu-1 back: rewind it as a replica of us-1, then switch over to it
    assert replica_resync(ResyncParams(**_params(lab, verify_timeout_seconds=60))).ok
    assert switchover(SwitchoverParams(**_params(lab, target="eu-1"))).ok
