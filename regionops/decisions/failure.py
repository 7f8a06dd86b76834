"""Whether the primary is down: failed probes, and every reachable replica has lost it.

The orchestrator's own connection attempts are one witness; the replicas' WAL receivers
are others.  A replica that still hears its sender proves the primary is alive and the
orchestrator is merely cut off from it (a network partition), in which case failing over
would create two primaries.  A replica whose receiver has lost its sender (not streaming,
or silent for longer than its ``wal_receiver_timeout``) is evidence the other way, and
once every reachable replica says so, waiting longer adds nothing but downtime.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Literal

from regionops.decisions._common import Decision, fmt_seconds, join_clauses
from regionops.model import NodeState


class ProbeOutcome(Decision):
    """One connection attempt by the orchestrator to the primary."""

    at: datetime
    reachable: bool
    error: str | None = None


Verdict = Literal["hears", "lost", "no-evidence"]


class ReplicaEvidence(Decision):
    """What one replica's WAL receiver says about the primary."""

    node: str
    verdict: Verdict
    phrase: str


class PrimaryDownDecision(Decision):
    """Whether to treat the primary as down, with the evidence either way."""

    primary: str
    down: bool
    failed_probes: int  # failed probes considered
    failed_span_seconds: float | None  # first to last failed probe; None without failures
    last_error: str | None = None  # error of the latest failed probe
    replicas_hearing_primary: tuple[str, ...] = ()  # replicas streaming with a message inside their window
    replicas_lost_primary: tuple[str, ...] = ()  # reachable replicas whose receiver lost it
    evidence_complete: bool = False  # every reachable replica (at least one) lost it
    reason: str


def receiver_window(wal_receiver_timeout_seconds: float | None) -> float | None:
    """How long a live primary may stay silent to a replica: its ``wal_receiver_timeout``.

    None (unknown, or 0 = the timeout disabled) means no bound: such a replica can only
    witness the primary's loss by its receiver no longer streaming.
    """
    if wal_receiver_timeout_seconds is None or wal_receiver_timeout_seconds <= 0:
        return None
    return wal_receiver_timeout_seconds


def replica_evidence(name: str, state: NodeState, wal_receiver_timeout_seconds: float | None) -> ReplicaEvidence:
    """Classify one replica as hearing the primary, having lost it, or giving no evidence."""
    receiver = state.wal_receiver
    window = receiver_window(wal_receiver_timeout_seconds)
    if not state.reachable:
        return ReplicaEvidence(node=name, verdict="no-evidence", phrase=f"{name} is unreachable (no evidence)")
    if receiver is None:
        return ReplicaEvidence(node=name, verdict="lost", phrase=f"{name} has no WAL receiver")
    if receiver.status != "streaming":
        return ReplicaEvidence(node=name, verdict="lost", phrase=f"{name}'s WAL receiver is {receiver.status}")
    age = receiver.last_msg_age_seconds
    if age is None:
        # Streaming without a receipt time: no message yet, neither proof of life nor of loss.
        return ReplicaEvidence(node=name, verdict="no-evidence", phrase=f"{name} streams but has no message time")
    if window is None or age < window:
        bound = f"within its window of {fmt_seconds(window)}" if window is not None else "(no receiver timeout)"
        return ReplicaEvidence(
            node=name,
            verdict="hears",
            phrase=f"{name} streams from {receiver.sender_host}:{receiver.sender_port}, last message "
            f"{fmt_seconds(age)} ago {bound}",
        )
    return ReplicaEvidence(
        node=name,
        verdict="lost",
        phrase=f"{name}'s last message is {fmt_seconds(age)} old, past its wal_receiver_timeout of "
        f"{fmt_seconds(window)}",
    )


def decide_primary_down(
    primary_name: str,
    probes: Sequence[ProbeOutcome],
    replica_states: Mapping[str, NodeState],
    *,
    grace_seconds: float,
    min_failed_probes: int = 3,
    receiver_timeouts: Mapping[str, float | None] | None = None,
) -> PrimaryDownDecision:
    """Decide whether ``primary_name`` is down; ``grace_seconds`` is the most confirmation waits.

    Never down while a probe succeeded, while fewer than ``min_failed_probes`` failed, or
    while ANY reachable replica hears the primary.  Down as soon as the evidence is
    complete: ``min_failed_probes`` failed AND every reachable replica (at least one) has
    lost it.  Otherwise down only once the failures span ``grace_seconds`` with no replica
    hearing it (no replica reachable, or one that gives no evidence): the rule this
    decision had before, kept as the ceiling, so no case is called down sooner without
    replica evidence than it was.

    Why a replica's silence is evidence (PostgreSQL 15, ``walreceiver.c`` / ``walsender.c``):
    the receiver stamps ``last_msg_receipt_time`` on every message from its sender, WAL or
    keepalive (``ProcessWalSndrMessage``).  When it has heard nothing for
    ``wal_receiver_timeout / 2`` it sends a status update asking for a reply; the sender
    answers a reply request at once with a keepalive (``ProcessStandbyReplyMessage``:
    ``if (replyRequested) WalSndKeepalive``).  So a live primary that can reach the replica
    is heard at least every ``wal_receiver_timeout / 2 + RTT`` (+ the receiver's 100 ms nap).
    After ``wal_receiver_timeout`` of silence the receiver ends itself ("terminating
    walreceiver due to timeout") and stops streaming.  A replica whose receiver streams with
    its last message younger than its own ``wal_receiver_timeout`` therefore HEARS the
    primary; one whose message is older, or whose receiver does not stream (sender gone:
    a crash closes the connection at once), has LOST it.  The window is the whole timeout,
    not half of it plus the round trip, so the primary may also stall: a stall of S seconds
    is never called down while ``wal_receiver_timeout > 2 * (S + RTT)`` (an idle primary may
    have been silent ``timeout / 2 + RTT`` already when it stalls; a busy one is heard
    continuously).  With the shipped 8 s and a 240 ms WAN round trip with jitter that
    tolerates a stall of about 3.4 s, and a frozen primary is lost by every replica within 8 s.
    The timeout is read from each replica (``receiver_timeouts``); unknown or 0 (disabled)
    means no window: such a streaming replica always hears.

    An unreachable replica, or one streaming with no message time yet, gives no evidence
    either way: it neither blocks the decision nor completes it; when no replica gives
    evidence, only the ceiling (today's rule) can call the primary down.  A replica
    streaming from another sender than the primary (cascading) is counted as hearing when
    fresh: the safe side.
    """
    timeouts = receiver_timeouts or {}
    ordered = sorted(probes, key=lambda p: p.at)
    failures = [p for p in ordered if not p.reachable]
    successes = [p for p in ordered if p.reachable]
    span = (failures[-1].at - failures[0].at).total_seconds() if failures else None
    last_error = failures[-1].error if failures else None
    evidence = [replica_evidence(n, replica_states[n], timeouts.get(n)) for n in sorted(replica_states)]
    hearing = [e for e in evidence if e.verdict == "hears"]
    lost = [e for e in evidence if e.verdict == "lost"]
    reachable = [e for e in evidence if replica_states[e.node].reachable]
    complete = bool(reachable) and len(lost) == len(reachable)

    def result(down: bool, reason: str) -> PrimaryDownDecision:
        return PrimaryDownDecision(
            primary=primary_name,
            down=down,
            failed_probes=len(failures),
            failed_span_seconds=span,
            last_error=last_error,
            replicas_hearing_primary=tuple(e.node for e in hearing),
            replicas_lost_primary=tuple(e.node for e in lost),
            evidence_complete=complete,
            reason=reason,
        )

    if not ordered:
        return result(False, f"{primary_name} is not down: it has not been probed yet")
    if successes:
        latest = successes[-1]
        return result(
            False,
            f"{primary_name} is not down: a probe reached it at {latest.at.isoformat()} "
            f"({len(failures)} of {len(ordered)} probes failed)",
        )
    assert span is not None
    failed = f"{len(failures)} probe(s) failed over {fmt_seconds(span)} (last error: {last_error})"
    replicas = join_clauses([e.phrase for e in evidence], ", ") or "no replicas observed"
    if hearing:
        others = [e.phrase for e in evidence if e.verdict != "hears"]
        also = f"; {join_clauses(others, ', ')}" if others else ""
        return result(
            False,
            f"{primary_name} is not down: {failed}, but replicas still hear it "
            f"({join_clauses([e.phrase for e in hearing], ', ')}{also}), so it is alive (or only slow) and the "
            f"orchestrator is probably cut off from it",
        )
    if len(failures) < min_failed_probes:
        return result(
            False,
            f"{primary_name} is not down yet: only {failed}; {min_failed_probes} failures are needed",
        )
    if complete:
        return result(
            True,
            f"{primary_name} is down: {failed}, and every reachable replica has lost it ({replicas})",
        )
    if span < grace_seconds:
        return result(
            False,
            f"{primary_name} is not down yet: {failed}, and the replicas do not all say it is gone "
            f"({replicas}): waiting up to {fmt_seconds(grace_seconds)}",
        )
    return result(
        True,
        f"{primary_name} is down: {failed}, at least the confirmation ceiling of {fmt_seconds(grace_seconds)}, "
        f"and no replica hears it ({replicas})",
    )
