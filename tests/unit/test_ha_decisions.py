"""Pure pieces of switchover / failover / resync: no servers, no clock, states built by hand.

Covers finding the primary, the switchover pre-checks, fenced nodes in the promotion
choice, a down node judged by its control file, the commit-time data-loss estimate,
and parsing pg_waldump (fences and the writer switch: test_fencing.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from regionops.decisions import (
    check_switchover,
    choose_promotion_candidate,
    decide_repair,
    decide_switchover_recovery,
    estimate_data_loss,
    find_primary,
)
from regionops.drivers.pgdata import parse_waldump
from regionops.lsn import Lsn
from regionops.model import ControlData
from regionops.model.probes import DnsRecord
from tests.unit.test_decisions import EU_EP, NOW, TOPO, US_EP, assert_mentions, down, primary, replica, states

# --- find_primary -------------------------------------------------------------------------


def test_the_only_reachable_primary_is_the_primary() -> None:
    view = find_primary(TOPO, "core", states(primary("eu-1"), replica("us-1"), replica("apac-1")), "eu-1")
    assert (view.primary, view.reachable) == ("eu-1", True)


def test_a_down_primary_is_named_by_the_writer_record() -> None:
    view = find_primary(
        TOPO, "core", states(down("eu-1"), replica("us-1", status=None), replica("apac-1", status=None)), "eu-1"
    )
    assert (view.primary, view.reachable) == ("eu-1", False)
    assert_mentions(view.reason, "no node answers as primary", "writer record points at eu-1")


def test_a_writer_record_at_a_replica_yields_to_the_replicas_senders() -> None:
    view = find_primary(TOPO, "core", states(down("eu-1"), replica("us-1"), replica("apac-1")), "us-1")
    assert view.primary == "eu-1" and not view.reachable
    assert_mentions(view.reason, "2 replica(s) were following eu-1")


def test_two_primaries_the_writer_record_decides() -> None:
    view = find_primary(
        TOPO,
        "core",
        states(primary("eu-1", timeline=1), primary("us-1", timeline=2), replica("apac-1", sender=US_EP)),
        "us-1",
    )
    assert view.primary == "us-1" and view.other_primaries == ("eu-1",)


def test_two_primaries_and_the_writer_record_elsewhere_is_ambiguous() -> None:
    view = find_primary(TOPO, "core", states(primary("eu-1"), primary("us-1"), replica("apac-1")), "apac-1")
    assert view.primary is None
    assert_mentions(view.reason, "ambiguous")


def test_no_evidence_names_no_primary() -> None:
    view = find_primary(TOPO, "core", states(down("eu-1"), down("us-1"), down("apac-1")), None)
    assert view.primary is None


# --- check_switchover ---------------------------------------------------------------------


def _healthy() -> dict:
    return states(
        primary("eu-1", lsn="0/5000100"), replica("us-1", replay="0/5000100"), replica("apac-1", replay="0/5000000")
    )


def _check(st, target="us-1", bound=1024, fenced=frozenset()):
    view = find_primary(TOPO, "core", st, "eu-1")
    return check_switchover(TOPO, "core", st, view, target=target, max_lag_bytes=bound, fenced=fenced)


def test_switchover_to_a_streaming_replica_can_start() -> None:
    check = _check(_healthy())
    assert check.ok and (check.primary, check.target, check.target_lag_bytes) == ("eu-1", "us-1", 0)


def test_switchover_without_a_target_picks_the_most_advanced_replica() -> None:
    st = states(
        primary("eu-1", lsn="0/5000100"), replica("us-1", replay="0/5000000"), replica("apac-1", replay="0/5000100")
    )
    assert _check(st, target=None).target == "apac-1"


@pytest.mark.parametrize(
    ("st", "target", "fenced", "fragments"),
    [
        (
            states(primary("eu-1", lsn="0/6000000"), replica("us-1", replay="0/5000000"), replica("apac-1")),
            "us-1",
            frozenset(),
            ["us-1 lags 16777216 bytes (16.0 MiB) behind eu-1"],
        ),
        (
            states(primary("eu-1"), replica("us-1", status="waiting"), replica("apac-1")),
            "us-1",
            frozenset(),
            ["not streaming from eu-1 (waiting)"],
        ),
        (
            states(primary("eu-1"), replica("us-1", sender=("elsewhere", 5432)), replica("apac-1")),
            "us-1",
            frozenset(),
            ["not streaming from eu-1"],
        ),
        (
            states(primary("eu-1"), replica("us-1", paused=True), replica("apac-1")),
            "us-1",
            frozenset(),
            ["WAL replay is paused on the target us-1"],
        ),
        (
            states(primary("eu-1"), down("us-1"), replica("apac-1")),
            "us-1",
            frozenset(),
            ["the target us-1 is unreachable"],
        ),
        (_healthy(), "eu-1", frozenset(), ["eu-1 is already the primary"]),
        (_healthy(), "nope", frozenset(), ["nope is not a node of cluster core"]),
        (_healthy(), "us-1", frozenset({"us-1"}), ["fenced by an earlier failover"]),
        (
            states(primary("eu-1"), replica("us-1", sysid="42"), replica("apac-1")),
            "us-1",
            frozenset(),
            ["holds another cluster's data"],
        ),
        (
            states(down("eu-1"), replica("us-1"), replica("apac-1")),
            "us-1",
            frozenset(),
            ["no reachable primary to hand over from"],
        ),
    ],
    ids=[
        "lagging",
        "not-streaming",
        "other-sender",
        "paused",
        "unreachable",
        "already-primary",
        "unknown-node",
        "fenced",
        "foreign-sysid",
        "primary-down",
    ],
)
def test_failed_switchover_prechecks_refuse_with_the_reason(st, target, fenced, fragments) -> None:
    check = _check(st, target=target, fenced=fenced)
    assert not check.ok
    assert_mentions(check.reason, "switchover refused, nothing was changed", *fragments)


# --- promotion skips fenced nodes -----------------------------------------------------------


def test_a_fenced_node_is_never_promoted() -> None:
    st = states(down("eu-1"), replica("us-1", replay="0/5000100"), replica("apac-1", replay="0/5000000"))
    decision = choose_promotion_candidate(TOPO, "core", st, old_primary="eu-1", fenced={"us-1"})
    assert decision.candidate == "apac-1"
    assert_mentions(decision.reason, "us-1 (it is fenced")


# --- a down node judged by its control file ---------------------------------------------------


def control(state: str, timeline: int, *, signal: bool = False, hints: bool = True) -> ControlData:
    return ControlData(
        node="eu-1",
        cluster_state=state,
        system_identifier="7300000000000000001",
        timeline=timeline,
        checkpoint_lsn=Lsn.parse("0/4000060"),
        wal_log_hints=hints,
        data_checksums=False,
        standby_signal=signal,
    )


def test_a_crashed_old_primary_is_rewound() -> None:
    last = control("in production", 1).last_known_state("connection refused", NOW)
    assert last.role == "primary" and not last.reachable
    d = decide_repair(
        last, primary("us-1", timeline=2), expected_primary_endpoint=US_EP, data_dir_exists=True, max_lag_bytes=1024
    )
    assert d.action == "rewind"
    assert_mentions(d.reason, "eu-1 is a second primary", "pg_rewind it from the primary us-1")


def test_a_fenced_crashed_primary_on_an_older_timeline_is_rewound() -> None:
    last = control("in production", 1, signal=True).last_known_state("connection refused", NOW)
    assert last.role == "replica"
    d = decide_repair(
        last, primary("us-1", timeline=2), expected_primary_endpoint=US_EP, data_dir_exists=True, max_lag_bytes=1024
    )
    assert d.action == "rewind"


def test_a_stopped_replica_on_the_primarys_timeline_is_started_as_a_replica() -> None:
    last = control("shut down in recovery", 2).last_known_state("connection refused", NOW)
    d = decide_repair(
        last,
        primary("us-1", timeline=2, lsn="0/5000000"),
        expected_primary_endpoint=US_EP,
        data_dir_exists=True,
        max_lag_bytes=1024,
    )
    assert (d.action, d.start_required) == ("repoint", True)


def test_a_node_without_hint_logging_is_recloned_not_rewound() -> None:
    cd = control("in production", 1, hints=False)
    d = decide_repair(
        cd.last_known_state("down", NOW),
        primary("us-1", timeline=2),
        expected_primary_endpoint=US_EP,
        data_dir_exists=True,
        max_lag_bytes=1024,
        rewind_possible=cd.rewindable,
    )
    assert d.action == "reclone"


# --- data loss from commit timestamps ---------------------------------------------------------


def test_data_loss_in_time_from_commit_timestamps() -> None:
    est = estimate_data_loss(Lsn.parse("0/5000100"), Lsn.parse("0/5000000"), lost_commit_seconds=1.25)
    assert (est.bytes, est.seconds) == (256, 1.25)
    assert_mentions(est.reason, "at least 256 bytes of WAL lost", "about 1.2 s (from commit timestamps)")


def test_no_loss_is_zero_seconds_whatever_the_commit_gap() -> None:
    est = estimate_data_loss(Lsn.parse("0/5000000"), Lsn.parse("0/5000000"), lost_commit_seconds=3.0)
    assert (est.bytes, est.seconds) == (0, 0.0)


# --- the writer record (tests/unit/test_fencing.py uses this fake) ----------------------------------------------------------


class FakeTraffic:
    """An in-memory TrafficDriver."""

    def __init__(self) -> None:
        self.records: dict[str, DnsRecord] = {}

    def get_record(self, zone_name: str, name: str, type: str = "CNAME") -> DnsRecord | None:
        return self.records.get(name)

    def set_record(self, zone_name: str, name: str, value: str, type: str = "CNAME", ttl: int = 30) -> DnsRecord:
        self.records[name] = DnsRecord(name=name, type=type, ttl=ttl, values=[value])
        return self.records[name]


# --- pg_waldump output ------------------------------------------------------------------------------

WALDUMP_END = """\
rmgr: Heap        len (rec/tot):     79/    79, tx:        775, lsn: 0/0400A238, prev 0/0400A200, desc: INSERT off 50
rmgr: Transaction len (rec/tot):     34/    34, tx:        775, lsn: 0/0400A2C8, prev 0/0400A288, desc: COMMIT 2026-11-24 02:55:52.822374 UTC
pg_waldump: error: error in WAL record at 0/400A2C8: invalid record length at 0/400A2F0: wanted 24, got 0
"""

WALDUMP_FULL_SEGMENT = """\
rmgr: XLOG        len (rec/tot):     34/    34, tx:          0, lsn: 0/030000D8, prev 0/03000060, desc: BACKUP_END 0/3000028
rmgr: XLOG        len (rec/tot):     24/    24, tx:          0, lsn: 0/03000100, prev 0/030000D8, desc: SWITCH
"""


def test_waldump_end_of_wal_and_last_commit() -> None:
    end, commit = parse_waldump(WALDUMP_END)
    assert end == Lsn.parse("0/400A2F0")
    assert commit == datetime(2026, 11, 24, 2, 55, 52, 822374, tzinfo=UTC)


def test_waldump_segment_read_to_its_end() -> None:
    end, commit = parse_waldump(WALDUMP_FULL_SEGMENT)
    assert end == Lsn.parse("0/3000118") and commit is None


def test_waldump_of_a_recycled_segment_has_no_records() -> None:
    assert parse_waldump("pg_waldump: error: could not find a valid record after 0/5000000\n") is None


def test_eu_endpoint_constant_matches_topology() -> None:
    node = TOPO.node("core", "eu-1")
    assert (node.host, node.port) == EU_EP


# --- a switchover that failed after writes stopped -------------------------------------------


@pytest.mark.parametrize(
    "case, target, fenced_on_disk, action, says",
    [
        (
            "promotion failed, the target is still a replica",
            replica("us-1"),
            False,
            "restore-old",
            "us-1 is still a replica (not promoted)",
        ),
        (
            "the target was promoted, then the slots or the writer record failed",
            primary("us-1"),
            False,
            "complete",
            "the move cannot be undone",
        ),
        (
            "the target vanished but was stopped and fenced on its disk",
            down("us-1"),
            True,
            "restore-old",
            "it is stopped and can only start read-only",
        ),
        (
            "the target vanished and could not be stopped: it may be a primary",
            down("us-1"),
            False,
            "escalate",
            "could make two primaries",
        ),
    ],
)
def test_a_failed_switchover_always_leaves_one_way_to_exactly_one_primary(
    case, target, fenced_on_disk, action, says
) -> None:
    decision = decide_switchover_recovery("eu-1", "us-1", target, target_fenced_on_disk=fenced_on_disk)
    assert decision.action == action, case
    assert says in decision.reason, decision.reason
