"""Whether the primary is down: enough failed probes, long enough, and no replica still hears it.

The orchestrator's own connection attempts are one witness; the replicas' WAL receivers
are others.  A replica that received a message from its sender within the grace period
proves the primary is alive and the orchestrator is merely cut off from it (a network
partition), in which case failing over would create two primaries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from regionops.decisions._common import Decision, fmt_seconds, join_clauses
from regionops.model import NodeState


class ProbeOutcome(Decision):
    """One connection attempt by the orchestrator to the primary."""

    at: datetime
    reachable: bool
    error: str | None = None


class PrimaryDownDecision(Decision):
    """Whether to treat the primary as down, with the evidence either way."""

    primary: str
    down: bool
    failed_probes: int  # failed probes considered
    failed_span_seconds: float | None  # first to last failed probe; None without failures
    last_error: str | None = None  # error of the latest failed probe
    replicas_hearing_primary: tuple[str, ...] = ()  # replicas streaming with a fresh message
    reason: str


def _replica_evidence(
    replica_states: Mapping[str, NodeState], grace_seconds: float
) -> tuple[list[str], list[str], list[str]]:
    """(replicas still hearing their sender, a phrase for each of those, a phrase per other replica)."""
    hearing: list[str] = []
    heard: list[str] = []
    silent: list[str] = []
    for name in sorted(replica_states):
        state = replica_states[name]
        receiver = state.wal_receiver
        if not state.reachable:
            silent.append(f"{name} is unreachable")
        elif receiver is None:
            silent.append(f"{name} has no WAL receiver")
        elif receiver.status != "streaming":
            silent.append(f"{name}'s WAL receiver is {receiver.status}")
        elif receiver.last_msg_age_seconds is None:
            # No receipt time means no message was ever received: not proof of life.
            silent.append(f"{name} streams but has no message time")
        elif receiver.last_msg_age_seconds < grace_seconds:
            hearing.append(name)
            heard.append(
                f"{name} streams from {receiver.sender_host}:{receiver.sender_port}, last message "
                f"{fmt_seconds(receiver.last_msg_age_seconds)} ago"
            )
        else:
            silent.append(f"{name}'s last message is {fmt_seconds(receiver.last_msg_age_seconds)} old")
    return hearing, heard, silent


def decide_primary_down(
    primary_name: str,
    probes: Sequence[ProbeOutcome],
    replica_states: Mapping[str, NodeState],
    *,
    grace_seconds: float,
    min_failed_probes: int = 3,
) -> PrimaryDownDecision:
    """Decide whether ``primary_name`` is down.

    Down only when all of: no probe succeeded; at least ``min_failed_probes`` probes failed;
    the failures span at least ``grace_seconds`` (first to last); and no reachable replica's
    WAL receiver is streaming with its last message younger than ``grace_seconds``.
    ``probes`` is the caller's observation window (e.g. since the last success): any
    success in it means the primary is not down.
    """
    ordered = sorted(probes, key=lambda p: p.at)
    failures = [p for p in ordered if not p.reachable]
    successes = [p for p in ordered if p.reachable]
    span = (failures[-1].at - failures[0].at).total_seconds() if failures else None
    last_error = failures[-1].error if failures else None
    hearing, heard, silent = _replica_evidence(replica_states, grace_seconds)

    def result(down: bool, reason: str) -> PrimaryDownDecision:
        return PrimaryDownDecision(
            primary=primary_name,
            down=down,
            failed_probes=len(failures),
            failed_span_seconds=span,
            last_error=last_error,
            replicas_hearing_primary=tuple(hearing),
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
    if len(failures) < min_failed_probes:
        return result(
            False,
            f"{primary_name} is not down yet: only {failed}; {min_failed_probes} failures are needed",
        )
    if span < grace_seconds:
        return result(
            False,
            f"{primary_name} is not down yet: {failed}, less than the grace period of {fmt_seconds(grace_seconds)}",
        )
    if hearing:
        return result(
            False,
            f"{primary_name} is not down: {failed}, but replicas still hear it within the grace "
            f"period of {fmt_seconds(grace_seconds)} ({join_clauses(heard, ', ')}), so it is "
            f"alive and the orchestrator is probably cut off from it",
        )
    replicas = join_clauses(silent, ", ") or "no replicas observed"
    return result(
        True,
        f"{primary_name} is down: {failed}, at least the grace period of "
        f"{fmt_seconds(grace_seconds)}, and no replica hears it ({replicas})",
    )
