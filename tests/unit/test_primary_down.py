"""Table tests of decide_primary_down: when failed probes and the replicas' WAL receivers call a primary down.

Pure: NodeStates and probe outcomes built by hand, no servers, no clock.  The replicas'
``wal_receiver_timeout`` is the lab's and the shipped 8 s unless a case says otherwise.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from regionops.decisions import PrimaryDownDecision, ProbeOutcome, decide_primary_down
from regionops.drivers.postgres import NodeState, WalReceiver

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
CEILING = 10.0  # the failover's default grace_seconds: the most confirmation waits
TIMEOUT = 8.0  # wal_receiver_timeout on every replica


def probes(*spec: tuple[float, bool], error: str = "connection refused") -> list[ProbeOutcome]:
    """(seconds after NOW, reachable) pairs."""
    return [
        ProbeOutcome(at=NOW + timedelta(seconds=t), reachable=ok, error=None if ok else f"{error} at +{t:g}s")
        for t, ok in spec
    ]


def failing(*times: float, error: str = "connection refused") -> list[ProbeOutcome]:
    return probes(*((t, False) for t in times), error=error)


def replica(name: str, *, status: str | None = "streaming", msg_age: float | None = 0.5) -> NodeState:
    """A reachable replica; ``status=None`` means no WAL receiver at all (its sender is gone)."""
    receiver = None
    if status is not None:
        receiver = WalReceiver(status=status, sender_host="db-eu-1", sender_port=5432, last_msg_age_seconds=msg_age)
    return NodeState(node=name, reachable=True, role="replica", wal_receiver=receiver, observed_at=NOW)


def unreachable(name: str) -> NodeState:
    return NodeState(node=name, reachable=False, error="connection timeout", observed_at=NOW)


def states(*nodes: NodeState) -> dict[str, NodeState]:
    return {s.node: s for s in nodes}


CRASHED = states(replica("us-1", status=None), replica("apac-1", status="waiting"))
TIMED_OUT = "timeout expired"

CASES: list[tuple[str, dict[str, Any]]] = [
    # --- a crashed primary: refused probes, senders gone: down at once after the minimum probes
    (
        "crash-down-after-minimum-probes",
        dict(
            probes=failing(0, 0.3, 0.6),
            replicas=CRASHED,
            want=True,
            complete=True,
            mentions=["eu-1 is down", "3 probe(s) failed over 0.6 s", "every reachable replica has lost it"],
        ),
    ),
    (
        "crash-not-yet-with-two-probes",
        dict(probes=failing(0, 0.3), replicas=CRASHED, want=False, mentions=["only 2 probe(s) failed", "3 failures"]),
    ),
    (
        "crash-one-replica-unreachable-the-other-lost-it",
        dict(
            probes=failing(0, 0.3, 0.6),
            replicas=states(replica("us-1", status=None), unreachable("apac-1")),
            want=True,
            complete=True,
            mentions=["us-1 has no WAL receiver", "apac-1 is unreachable (no evidence)"],
        ),
    ),
    # --- a primary that is only slow (a 3 s stall): never down
    (
        "slow-3s-probes-failing-replicas-3s-silent",
        dict(
            probes=failing(0, 1, 2, 3, error=TIMED_OUT),
            replicas=states(replica("us-1", msg_age=3.0), replica("apac-1", msg_age=2.9)),
            want=False,
            hearing=("apac-1", "us-1"),
            mentions=["eu-1 is not down", "replicas still hear it", "last message 3.0 s ago", "only slow"],
        ),
    ),
    (
        "slow-idle-primary-stall-on-top-of-half-the-timeout",
        # An idle primary may have been silent timeout/2 + RTT before it stalled 3 s.
        dict(
            probes=failing(0, 1.5, 3, error=TIMED_OUT),
            replicas=states(replica("us-1", msg_age=4.0 + 0.5 + 3.0)),
            want=False,
            hearing=("us-1",),
            mentions=["last message 7.5 s ago within its window of 8.0 s"],
        ),
    ),
    (
        "slow-at-the-ceiling-still-heard",
        dict(
            probes=failing(0, 5, 10, 12, error=TIMED_OUT),
            replicas=states(replica("us-1", msg_age=3.0)),
            want=False,
            hearing=("us-1",),
            mentions=["replicas still hear it"],
        ),
    ),
    # --- heard by ANY replica: never down, whatever the others say
    (
        "one-replica-hears-the-other-lost-it",
        dict(
            probes=failing(0, 4, 8, 12),
            replicas=states(replica("us-1", msg_age=1.5), replica("apac-1", status=None)),
            want=False,
            hearing=("us-1",),
            mentions=["us-1 streams from db-eu-1:5432, last message 1.5 s ago", "orchestrator is probably cut off"],
        ),
    ),
    (
        "disabled-receiver-timeout-means-streaming-always-hears",
        dict(
            probes=failing(0, 4, 8, 12),
            replicas=states(replica("us-1", msg_age=30.0)),
            timeouts={"us-1": 0.0},
            want=False,
            hearing=("us-1",),
            mentions=["(no receiver timeout)"],
        ),
    ),
    (
        "unknown-receiver-timeout-means-streaming-always-hears",
        dict(
            probes=failing(0, 4, 8, 12),
            replicas=states(replica("us-1", msg_age=30.0)),
            timeouts={"us-1": None},
            want=False,
            hearing=("us-1",),
            mentions=["(no receiver timeout)"],
        ),
    ),
    # --- a frozen primary (SIGSTOP): connects hang, receivers silent with a growing age
    (
        "frozen-before-the-receivers-timeout-not-yet",
        dict(
            probes=failing(0, 2, 4, error=TIMED_OUT),
            replicas=states(replica("us-1", msg_age=5.0), replica("apac-1", msg_age=5.1)),
            want=False,
            hearing=("apac-1", "us-1"),
            mentions=["replicas still hear it"],
        ),
    ),
    (
        "frozen-past-the-receivers-timeout-down",
        dict(
            probes=failing(0, 2, 4, 6, error=TIMED_OUT),
            replicas=states(replica("us-1", msg_age=8.1), replica("apac-1", msg_age=8.2)),
            want=True,
            complete=True,
            mentions=["us-1's last message is 8.1 s old, past its wal_receiver_timeout of 8.0 s"],
        ),
    ),
    (
        "frozen-receivers-ended-themselves-down",
        dict(
            probes=failing(0, 2, 4, 6, error=TIMED_OUT),
            replicas=states(replica("us-1", status=None), replica("apac-1", status="starting")),
            want=True,
            complete=True,
            mentions=["apac-1's WAL receiver is starting"],
        ),
    ),
    (
        "each-replica-judged-by-its-own-timeout",
        dict(
            probes=failing(0, 2, 4),
            replicas=states(replica("us-1", msg_age=6.0), replica("apac-1", msg_age=6.0)),
            timeouts={"us-1": 5.0, "apac-1": 60.0},
            want=False,
            hearing=("apac-1",),
            mentions=["us-1's last message is 6.0 s old, past its wal_receiver_timeout of 5.0 s", "apac-1 streams"],
        ),
    ),
    # --- no replica gives evidence: today's rule, the ceiling, and nothing sooner
    (
        "no-replica-reachable-waits-for-the-ceiling",
        dict(
            probes=failing(0, 0.3, 0.6),
            replicas=states(unreachable("us-1"), unreachable("apac-1")),
            want=False,
            mentions=["not down yet", "us-1 is unreachable (no evidence)", "waiting up to 10.0 s"],
        ),
    ),
    (
        "no-replica-reachable-down-at-the-ceiling",
        dict(
            probes=failing(0, 5, 10),
            replicas=states(unreachable("us-1"), unreachable("apac-1")),
            want=True,
            mentions=["eu-1 is down", "confirmation ceiling of 10.0 s", "no replica hears it"],
        ),
    ),
    (
        "no-replicas-at-all-down-at-the-ceiling",
        dict(probes=failing(0, 5, 10), replicas={}, want=True, mentions=["no replicas observed"]),
    ),
    (
        "streaming-without-message-time-is-no-evidence",
        dict(
            probes=failing(0, 0.3, 0.6),
            replicas=states(replica("us-1", msg_age=None), replica("apac-1", status=None)),
            want=False,
            mentions=["us-1 streams but has no message time", "waiting up to"],
        ),
    ),
    # --- probes
    (
        "not-down-no-probes",
        dict(probes=[], replicas=CRASHED, want=False, mentions=["has not been probed yet"]),
    ),
    (
        "not-down-one-success-among-failures",
        dict(
            probes=probes((0, False), (4, False), (6, True), (8, False), (12, False)),
            replicas=CRASHED,
            want=False,
            mentions=["a probe reached it at 2024-05-01T12:00:06+00:00", "4 of 5 probes failed"],
        ),
    ),
    (
        "probes-out-of-order",
        dict(
            probes=list(reversed(failing(0, 0.3, 0.6))),
            replicas=CRASHED,
            want=True,
            complete=True,
            mentions=["failed over 0.6 s", "last error: connection refused at +0.6s"],
        ),
    ),
    (
        "min-failed-probes-one",
        dict(probes=failing(0), replicas=CRASHED, min_failed=1, want=True, mentions=["1 probe(s) failed"]),
    ),
]


@pytest.mark.parametrize("case", [c for _, c in CASES], ids=[i for i, _ in CASES])
def test_decide_primary_down(case: dict[str, Any]) -> None:
    timeouts = {n: TIMEOUT for n in case["replicas"]} | case.get("timeouts", {})
    decision = decide_primary_down(
        "eu-1",
        case["probes"],
        case["replicas"],
        grace_seconds=CEILING,
        min_failed_probes=case.get("min_failed", 3),
        receiver_timeouts=timeouts,
    )
    assert isinstance(decision, PrimaryDownDecision)
    assert decision.down is case["want"], decision.reason
    assert decision.replicas_hearing_primary == case.get("hearing", ()), decision.reason
    assert decision.evidence_complete is case.get("complete", decision.evidence_complete)
    missing = [m for m in case["mentions"] if m not in decision.reason]
    assert not missing, f"reason {decision.reason!r} does not mention {missing}"


@pytest.mark.parametrize("stall", [0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("idle_silence", [0.0, 2.0, 4.0 + 0.24])  # heard last just now .. timeout/2 + a WAN RTT
def test_a_stall_of_up_to_3s_is_never_called_down(stall: float, idle_silence: float) -> None:
    """Every probe during the stall failed; every replica has been silent for what it had been plus the stall."""
    times = [i * 0.3 for i in range(int(stall / 0.3) + 1)]
    replicas = states(replica("us-1", msg_age=idle_silence + stall), replica("apac-1", msg_age=stall))
    decision = decide_primary_down(
        "eu-1",
        failing(*times, error=TIMED_OUT),
        replicas,
        grace_seconds=CEILING,
        receiver_timeouts={"us-1": TIMEOUT, "apac-1": TIMEOUT},
    )
    assert not decision.down, decision.reason


def test_the_decision_records_the_evidence() -> None:
    decision = decide_primary_down(
        "eu-1", failing(0, 0.3, 0.6), CRASHED, grace_seconds=CEILING, receiver_timeouts={"us-1": 8, "apac-1": 8}
    )
    assert (decision.failed_probes, decision.failed_span_seconds) == (3, pytest.approx(0.6))
    assert decision.replicas_lost_primary == ("apac-1", "us-1") and decision.evidence_complete
    empty = decide_primary_down("eu-1", [], {}, grace_seconds=CEILING)
    assert (empty.failed_probes, empty.failed_span_seconds, empty.last_error) == (0, None, None)
