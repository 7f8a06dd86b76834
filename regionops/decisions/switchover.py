"""Whether a planned switchover may start: every pre-check, each failure a sentence.

A switchover promises zero data loss, so it only starts from a healthy cluster: one
reachable primary, and a target replica that streams from it with little lag.  Any
failed check means the runbook changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Literal

from regionops.decisions._common import Decision, fmt_bytes, join_clauses
from regionops.decisions.primary import PrimaryView
from regionops.decisions.promotion import choose_promotion_candidate
from regionops.model import NodeState
from regionops.topology import Topology


class SwitchoverCheck(Decision):
    """The verdict of the pre-checks: who moves where, or why not."""

    cluster: str
    ok: bool
    primary: str | None
    target: str | None
    target_lag_bytes: int | None = None
    problems: tuple[str, ...] = ()
    reason: str


def _streams_from(state: NodeState, host: str, port: int) -> bool:
    receiver = state.wal_receiver
    return bool(
        receiver
        and receiver.status == "streaming"
        and (receiver.sender_host or "").rstrip(".").lower() == host.rstrip(".").lower()
        and receiver.sender_port in (None, port)
    )


def check_switchover(
    topology: Topology,
    cluster: str,
    states: Mapping[str, NodeState],
    primary: PrimaryView,
    *,
    target: str | None,
    max_lag_bytes: int,
    fenced: Set[str] = frozenset(),
) -> SwitchoverCheck:
    """Check that ``primary`` can hand over to ``target`` (or the best replica when None).

    Pass: the primary is known, reachable and alone; the target is a reachable replica
    of the cluster, not fenced, with the primary's system identifier, streaming from the
    primary, replay not paused, and lagging at most ``max_lag_bytes``.
    """
    problems: list[str] = []
    nodes = topology.clusters[cluster].nodes
    pname = primary.primary
    pstate = states.get(pname) if pname else None

    if pname is None or pstate is None or not primary.reachable:
        problems.append(f"there is no reachable primary to hand over from ({primary.reason})")
    elif primary.other_primaries:
        problems.append(f"more than one node answers as primary ({primary.reason})")

    if target is None and pname is not None:
        pick = choose_promotion_candidate(topology, cluster, states, old_primary=pname, fenced=fenced)
        target = pick.candidate
        if target is None:
            problems.append(pick.reason)

    lag = None
    if target is not None:
        tstate = states.get(target)
        if target not in nodes:
            problems.append(f"{target} is not a node of cluster {cluster} ({', '.join(sorted(nodes))})")
        elif target == pname:
            problems.append(f"{target} is already the primary")
        elif tstate is None or not tstate.reachable:
            problems.append(f"the target {target} is unreachable ({tstate.error if tstate else 'not observed'})")
        elif tstate.role != "replica":
            problems.append(f"the target {target} is not a replica (role {tstate.role})")
        else:
            if target in fenced:
                problems.append(f"the target {target} is fenced by an earlier failover; resync it first")
            if pstate is not None and pname is not None:
                spec = nodes[pname]
                if not _streams_from(tstate, spec.host, spec.port):
                    status = tstate.wal_receiver.status if tstate.wal_receiver else "no WAL receiver"
                    problems.append(f"the target {target} is not streaming from {pname} ({status})")
                if (
                    tstate.system_identifier
                    and pstate.system_identifier
                    and tstate.system_identifier != pstate.system_identifier
                ):
                    problems.append(
                        f"the target {target} holds another cluster's data (system identifier "
                        f"{tstate.system_identifier}, {pname} has {pstate.system_identifier})"
                    )
                if pstate.current_lsn is not None and tstate.replay_lsn is not None:
                    lag = max(0, pstate.current_lsn - tstate.replay_lsn)
                    if lag > max_lag_bytes:
                        problems.append(
                            f"the target {target} lags {fmt_bytes(lag)} behind {pname} "
                            f"(bound {fmt_bytes(max_lag_bytes)})"
                        )
                else:
                    problems.append(f"the target {target}'s lag is unknown")
            if tstate.replay_paused:
                problems.append(f"WAL replay is paused on the target {target}")

    if problems:
        return SwitchoverCheck(
            cluster=cluster,
            ok=False,
            primary=pname,
            target=target,
            target_lag_bytes=lag,
            problems=tuple(problems),
            reason="switchover refused, nothing was changed: " + join_clauses(problems),
        )
    return SwitchoverCheck(
        cluster=cluster,
        ok=True,
        primary=pname,
        target=target,
        target_lag_bytes=lag,
        reason=(
            f"switchover from {pname} to {target} can start: {target} streams from {pname}, "
            f"{fmt_bytes(lag or 0)} behind (bound {fmt_bytes(max_lag_bytes)})"
        ),
    )


class SwitchoverRecovery(Decision):
    """What a switchover that failed after the old primary stopped taking writes must do, and why."""

    action: Literal["restore-old", "complete", "escalate"]
    reason: str


def decide_switchover_recovery(
    old: str, target: str, target_state: NodeState | None, *, target_fenced_on_disk: bool = False
) -> SwitchoverRecovery:
    """After a failure between "writes stopped on ``old``" and "writer record on ``target``": which way back.

    Exactly one writable primary must come out of it, the one the writer record names:

    - the target was promoted (it answers as a primary): the move is half done and cannot
      be undone, so it is completed (slots, writer record, the old primary follows it);
    - the target still answers as a replica: nothing can take writes but the old primary,
      so the old primary is started again and given its writes back;
    - the target does not answer: it may have been promoted, and restarting the old primary
      could make two.  Only when the target was stopped and made to start read-only on its
      disk (``target_fenced_on_disk``) is the old primary given its writes back; otherwise a
      human must decide, and the runbook says so.
    """
    if target_state is not None and target_state.reachable:
        if target_state.role == "primary":
            return SwitchoverRecovery(
                action="complete",
                reason=(
                    f"{target} was promoted before the failure: the move cannot be undone, so it is completed "
                    f"({old} follows {target}, the writer record moves to {target})"
                ),
            )
        return SwitchoverRecovery(
            action="restore-old",
            reason=(
                f"{target} is still a replica (not promoted): {old} is started again and given its writes back, "
                f"the writer record stays on {old}"
            ),
        )
    if target_fenced_on_disk:
        return SwitchoverRecovery(
            action="restore-old",
            reason=(
                f"{target} does not answer, but it is stopped and can only start read-only: {old} is started again "
                f"and given its writes back"
            ),
        )
    error = target_state.error if target_state is not None else "not observed"
    return SwitchoverRecovery(
        action="escalate",
        reason=(
            f"{target} does not answer ({error}) and could not be stopped: it may have been promoted, so restarting "
            f"{old} could make two primaries; {old} stays stopped and read-only. Find out whether {target} runs as a "
            f"primary, then run failover (if it does not) or point the writer record at it (if it does)"
        ),
    )
