"""Scenarios: the primary moves and the cluster follows, on a real lab, with deadlines.

One private lab for the module (these tests change which node is primary).  The
scenarios run in order and each ends with eu-1 primary and both replicas streaming:

- a planned switchover eu-1 -> us-1 under write load loses no acknowledged write,
  then a switchover back restores the layout;
- eu-1 crashes: failover promotes the most advanced replica (us-1), apac-1 follows,
  DNS follows, writes succeed, the report states the data-loss estimate; replica
  resync then brings eu-1 back with pg_rewind; a switchover restores the layout.
"""

from __future__ import annotations

import time

import pytest

from flows.failover import FailoverParams, failover
from flows.replica_resync import ResyncParams, replica_resync
from flows.switchover import SwitchoverParams, switchover
from regionops.decisions import estimate_data_loss
from regionops.lab import pglab
from regionops.node import LocalNodeOperator
from regionops.waiting import poll_until
from tests import ha_tools as ha
from tests import labtools

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def ha_lab(lab):
    """A cluster of this module's own (its primary moves); runs go to the session lab's Prefect server."""
    with ha.private_cluster() as cluster:
        yield cluster


def _topology(lab) -> str:
    return str(lab.cfg.topology_path)


def test_switchover_eu_to_us_and_back_loses_no_acknowledged_write(ha_lab):
    lab = ha_lab
    # Given eu-1 primary, rows written before, and a client writing every 50 ms throughout
    ha.expect_layout(lab, "eu-1")
    before = ha.write_rows(lab, 10)
    labtools.clear_slack(lab)
    with ha.writing(lab, "us") as load:
        time.sleep(0.5)
        # When the switchover to us-1 runs
        state = switchover(
            SwitchoverParams(topology=_topology(lab), target="us-1", lock_wait_seconds=15), return_state=True
        )
        result = state.result()
        # Then writes resume on us-1 (within 10 s of the run's end at the latest)
        poll_until(lambda: any(n == "us-1" for _, _, n in load.acked), timeout=10, what="a write on us-1")
        time.sleep(0.5)
    assert result.ok and result.old_primary == "eu-1" and result.new_primary == "us-1"
    # us-1 primary, eu-1 and apac-1 streaming from it, the writer record at us-1
    ha.expect_layout(lab, "us-1", timeout=10)
    assert ha.writer(lab) == "us-1"
    # every row written before, and every write the app acknowledged during it, is on us-1
    on_us = ha.row_ids(lab, "us-1")
    assert set(before) <= on_us
    assert load.ids <= on_us, f"acknowledged writes lost: {sorted(load.ids - on_us)}"
    assert any(n == "eu-1" for _, _, n in load.acked), "the writer must have written on eu-1 before the move"
    # and each replica replays them too
    poll_until(
        lambda: load.ids <= ha.row_ids(lab, "apac-1") and load.ids <= ha.row_ids(lab, "eu-1"),
        timeout=10,
        what="every acknowledged row on both replicas",
    )
    assert "switched core over from eu-1 to us-1" in ha.slack_texts(lab)
    assert "no data loss" in ha.report_markdown(ha.run_id(state))

    # When the switchover back runs, Then the original layout is back
    back = switchover(SwitchoverParams(topology=_topology(lab), target="eu-1", lock_wait_seconds=15))
    assert back.ok and back.timeline and back.timeline > (result.timeline or 0)
    ha.expect_layout(lab, "eu-1", timeout=10)
    assert ha.writer(lab) == "eu-1"
    assert load.ids | set(before) <= ha.row_ids(lab, "eu-1")


def test_primary_crash_failover_then_resync_rewinds_the_old_primary(ha_lab):
    lab = ha_lab
    topo = _topology(lab)
    # Given eu-1 primary and apac-1 falling behind: its receiver is cut while rows are written
    ha.expect_layout(lab, "eu-1")
    # (not labtools.replication_broken: its clean-up re-points apac-1 at eu-1, which will be gone)
    apac = labtools.sql(lab, "apac-1", "postgres")
    apac.set_config("primary_conninfo", "host=127.0.0.1 port=1 user=postgres application_name=apac-1")
    poll_until(lambda: not ha.streams_from(lab, "apac-1", "eu-1"), timeout=15, what="apac-1 cut off")
    acked = ha.write_rows(lab, 20)
    poll_until(lambda: set(acked) <= ha.row_ids(lab, "us-1"), timeout=10, what="us-1 holding every row")
    labtools.clear_slack(lab)

    # When eu-1 crashes and the failover runbook runs (every process's arguments watched for the password)
    password = lab.cfg.pg_password()
    assert password
    watch = ha.CommandLineWatch(password)
    watch.start()
    ha.crash(lab, "eu-1")
    started = time.monotonic()
    state = failover(
        FailoverParams(
            topology=topo,
            grace_seconds=1.5,
            probes=3,
            probe_timeout_seconds=1,
            reason="test: eu-1 crashed",
            lock_wait_seconds=15,
        ),
        return_state=True,
    )
    result = state.result()
    took = time.monotonic() - started

    # Then the most advanced replica (us-1, ahead of apac-1) was promoted, once
    assert result.ok and result.old_primary == "eu-1" and result.new_primary == "us-1"
    assert "it has replayed the most WAL" in result.choice_reason
    assert ha.state(lab, "us-1").role == "primary"
    # apac-1 follows it on the new timeline within 10 s
    poll_until(lambda: ha.streams_from(lab, "apac-1", "us-1"), timeout=10, what="apac-1 streaming from us-1")
    assert ha.state(lab, "apac-1").timeline == result.timeline
    # DNS follows; writes through the apps succeed and land on us-1
    assert ha.writer(lab) == "us-1"
    assert ha.write_rows(lab, 3, region="apac")
    # nothing acknowledged was lost (the replicas had it all), and the estimate says so truthfully
    assert set(acked) <= ha.row_ids(lab, "us-1")
    assert result.data_loss is not None and result.data_loss.bytes == 0
    assert "WAL on disk" in (result.data_loss_source or "")
    # the old primary is fenced: stopped, read-only on disk, marker present
    assert "eu-1" in ha.fences(lab)
    assert not pglab.pgctl(lab.cfg, "eu-1").is_running()
    assert (lab.cfg.data_dir("eu-1") / "standby.signal").exists()
    # the report (UI artifact and Slack) states the data-loss estimate
    report = ha.report_markdown(ha.run_id(state))
    assert "data loss" in report and "no data loss visible" in report
    assert "no data loss visible" in ha.slack_texts(lab)
    assert result.writes_accepted_after_seconds is not None and result.writes_accepted_after_seconds < took

    # When replica resync runs, Then eu-1 is rewound (pg_rewind) and streams from us-1
    try:
        resync = replica_resync(ResyncParams(topology=topo, verify_timeout_seconds=60, lock_wait_seconds=15))
    finally:
        watch.stop()
    # no process ever had the password in its arguments: not pg_rewind, not the servers it started
    assert watch.looks > 100 and "pg_rewind" in watch.processes, (watch.looks, sorted(watch.processes))
    assert not watch.seen, watch.seen
    by_node = {r.node: r for r in resync.repairs}
    assert resync.ok
    assert [d.action for d in by_node["eu-1"].decisions] == ["rewind"]
    assert any("with pg_rewind" in a and "servers diverged" in a for a in by_node["eu-1"].actions)
    assert by_node["apac-1"].action == "nothing"
    ha.expect_layout(lab, "us-1", timeout=10)
    assert "eu-1" not in ha.fences(lab)
    assert set(acked) <= ha.row_ids(lab, "eu-1")

    # Finally a switchover puts eu-1 back
    back = switchover(SwitchoverParams(topology=topo, target="eu-1", lock_wait_seconds=15))
    assert back.ok
    ha.expect_layout(lab, "eu-1", timeout=10)


def test_data_loss_estimate_matches_what_the_old_primary_wrote(ha_lab):
    """The estimate reads the crashed primary's own WAL: compare with pg_waldump's view directly."""
    lab = ha_lab
    ha.expect_layout(lab, "eu-1")
    ops = LocalNodeOperator(lab.topology(), "core")
    ha.write_rows(lab, 5)
    ha.crash(lab, "eu-1")
    try:
        end = ops.wal_end("eu-1")
        replica_has = ha.state(lab, "us-1").receive_lsn
        assert end is not None and replica_has is not None
        assert end.lsn == replica_has, "async replication on loopback ships everything before the crash"
        assert estimate_data_loss(end.lsn, replica_has).bytes == 0
        assert end.last_commit_at is not None
    finally:
        ha.start(lab, "eu-1")
    ha.expect_layout(lab, "eu-1", timeout=15)
