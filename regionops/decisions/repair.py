"""What to do with one replica so that it follows the current primary again.

The actions, cheapest first: ``nothing`` (healthy), ``wait`` (streaming but behind, or
there is no primary to compare against), ``repoint`` (point primary_conninfo at the
primary, and start the node when it is down), ``rewind`` (pg_rewind from the primary: the
node has history the primary does not), ``reclone`` (pg_basebackup from scratch).

The checks run from the most fundamental to the most superficial: without a usable
primary nothing can be judged; a missing data directory or a foreign system identifier
cannot be fixed by anything but a reclone; divergence cannot be fixed by repointing; only
then do the sender, streaming and lag matter.
"""

from __future__ import annotations

from typing import Literal

from regionops.decisions._common import Decision, fmt_bytes, fmt_endpoint
from regionops.lsn import Lsn
from regionops.model import NodeState

RepairAction = Literal["nothing", "wait", "repoint", "rewind", "reclone"]


class RepairDecision(Decision):
    """The action for one replica, the lag that informed it, and the reason."""

    node: str
    action: RepairAction
    start_required: bool = False  # the node is down: repoint means "start it as a replica of the primary"
    lag_bytes: int | None = None  # primary current LSN minus replica replay LSN, when both are known
    reason: str


def _same_host(a: str | None, b: str) -> bool:
    """Host names compare case-insensitively and without a trailing dot (DNS forms differ)."""
    return a is not None and a.rstrip(".").lower() == b.rstrip(".").lower()


def _furthest(state: NodeState) -> Lsn | None:
    """The furthest WAL the node holds: for a replica it may have received more than it replayed."""
    if state.role == "primary":
        return state.current_lsn
    known = [lsn for lsn in (state.receive_lsn, state.replay_lsn) if lsn is not None]
    return max(known) if known else None


def _streams_from(replica: NodeState, endpoint: tuple[str, int] | None) -> bool:
    """Whether the replica's WAL receiver is streaming from ``endpoint`` (any sender when None)."""
    receiver = replica.wal_receiver
    if receiver is None or receiver.status != "streaming":
        return False
    if endpoint is None:
        return True
    host, port = endpoint
    # A receiver that reports no port is judged by host alone.
    return _same_host(receiver.sender_host, host) and receiver.sender_port in (None, port)


def _divergence(replica: NodeState, primary: NodeState, *, streaming_from_primary: bool) -> str | None:
    """Why ``replica`` has history the primary lacks, or None when nothing shows that.

    Without the primary's timeline history we do not know where it switched timelines,
    so an older timeline is treated as diverged: pg_rewind on a node that did not in fact
    diverge only copies what changed and is safe, whereas streaming from a diverged node
    would fail or, worse, mix histories.
    """
    pname = primary.node
    if replica.role == "primary":
        where = f"timeline {replica.timeline} at {replica.current_lsn}"
        return (
            f"{replica.node} is a second primary ({where}) while {pname} is the primary on "
            f"timeline {primary.timeline}: it has taken writes the primary does not have"
        )
    if replica.timeline is not None and primary.timeline is not None:
        if replica.timeline < primary.timeline:
            return (
                f"{replica.node} is on timeline {replica.timeline}, older than the primary {pname}'s "
                f"timeline {primary.timeline}, and where it sits relative to the timeline switch "
                f"is unknown"
            )
        if replica.timeline > primary.timeline:
            return (
                f"{replica.node} is on timeline {replica.timeline}, newer than the primary {pname}'s "
                f"timeline {primary.timeline}: it has history the primary lacks"
            )
        furthest = _furthest(replica)
        # A replica streaming from the primary can only hold what the primary sent; if it
        # looks ahead, it was observed after the primary and the "lead" is a race.
        if streaming_from_primary:
            return None
        if furthest is not None and primary.current_lsn is not None and furthest > primary.current_lsn:
            return (
                f"{replica.node} holds WAL up to {furthest}, {fmt_bytes(furthest - primary.current_lsn)} "
                f"past the primary {pname}'s {primary.current_lsn} on the same timeline "
                f"{primary.timeline}"
            )
    return None


def decide_repair(
    replica: NodeState,
    primary: NodeState | None,
    *,
    expected_primary_endpoint: tuple[str, int] | None,
    data_dir_exists: bool,
    max_lag_bytes: int,
    rewind_possible: bool = True,
) -> RepairDecision:
    """Decide how to bring ``replica`` back to streaming from ``primary``.

    ``expected_primary_endpoint`` is the (host, port) the replica's WAL receiver should be
    connected to; when None the sender is not checked.  ``data_dir_exists`` is observed on
    the node's machine.  ``rewind_possible`` is False when pg_rewind cannot work (no data
    checksums or wal_log_hints, or the needed WAL is gone): a diverged node is then recloned.
    Lag is ``primary.current_lsn - replica.replay_lsn``; at most ``max_lag_bytes`` is healthy.
    """
    name = replica.node
    target = fmt_endpoint(expected_primary_endpoint) if expected_primary_endpoint else None

    def decision(action: RepairAction, reason: str, **extra: object) -> RepairDecision:
        return RepairDecision(node=name, action=action, reason=reason, **extra)  # type: ignore[arg-type]

    # 1. Every action other than "nothing" copies from or connects to the primary, and
    #    "nothing" cannot be verified without it: with no usable primary, wait.
    if primary is None:
        return decision("wait", f"{name} cannot be repaired yet: there is no primary to follow")
    if not primary.reachable:
        return decision(
            "wait",
            f"{name} cannot be repaired yet: the primary {primary.node} is unreachable ({primary.error})",
        )
    if primary.role != "primary":
        return decision(
            "wait",
            f"{name} cannot be repaired yet: {primary.node} is not a primary (role {primary.role})",
        )
    if primary.node == name:
        return decision("nothing", f"{name} is the primary itself; there is nothing to repair")
    pname = primary.node
    source = f"the primary {pname}" + (f" ({target})" if target else "")

    # 2. Nothing left to rewind or repoint.
    if not data_dir_exists:
        return decision(
            "reclone",
            f"{name}'s data directory is missing: reclone it from {source}",
        )

    # 3. Another cluster's data (restored from the wrong backup, re-initdb'd): WAL from
    #    this primary can never apply to it.
    if (
        replica.system_identifier
        and primary.system_identifier
        and replica.system_identifier != primary.system_identifier
    ):
        return decision(
            "reclone",
            f"{name} has system identifier {replica.system_identifier} but {pname} has "
            f"{primary.system_identifier}: it holds a different cluster's data; reclone it from {source}",
        )

    # 4. Diverged: repointing would fail ("requested timeline is not a child") or mix
    #    histories.  Checked on whatever is known, so a down node with a last-known state
    #    that shows divergence is rewound too.
    streaming_from_primary = _streams_from(replica, expected_primary_endpoint)
    diverged = _divergence(replica, primary, streaming_from_primary=streaming_from_primary)
    if diverged is not None:
        if rewind_possible:
            return decision(
                "rewind",
                f"{diverged}; pg_rewind it from {source} and start it as a replica",
            )
        return decision(
            "reclone",
            f"{diverged}; pg_rewind is not possible for it, so reclone it from {source}",
        )

    # 5. Down but intact and not known to be diverged: starting it with primary_conninfo
    #    pointing at the primary is the whole repair.  If it did diverge, the next
    #    observation shows it and step 4 rewinds it.
    if not replica.reachable:
        return decision(
            "repoint",
            f"{name} is down ({replica.error or 'unreachable'}) with its data directory intact and "
            f"nothing shows it diverged: start it as a replica of {source} with "
            f"primary_conninfo pointing there",
            start_required=True,
        )

    if replica.role != "replica":
        return decision("wait", f"{name} answers but its role is {replica.role}; observe it again before acting")

    on_timeline = (
        f"it is on the primary's timeline {primary.timeline} at {replica.replay_lsn}, not ahead of "
        f"the primary's {primary.current_lsn}"
        if replica.timeline is not None and primary.timeline is not None
        else f"its timeline is unknown and nothing shows it diverged from the primary's {primary.current_lsn}"
    )
    receiver = replica.wal_receiver

    # 6. Healthy history but not following the primary: only primary_conninfo is wrong
    #    (typically still the old primary after a failover), or the receiver stopped.
    if receiver is None or receiver.status != "streaming":
        status = "it has no WAL receiver" if receiver is None else f"its WAL receiver is {receiver.status}"
        configured = ""
        if receiver is not None and receiver.sender_host:
            configured = f" (configured for {receiver.sender_host}:{receiver.sender_port})"
        return decision(
            "repoint",
            f"{name} is not streaming: {status}{configured}; {on_timeline}, so pointing "
            f"primary_conninfo at {source} is enough",
        )
    if not streaming_from_primary:
        return decision(
            "repoint",
            f"{name} streams from {receiver.sender_host}:{receiver.sender_port} but the primary "
            f"{pname} is {target}; {on_timeline}, so pointing primary_conninfo at {target} is enough",
        )

    # 7. Following the right primary: only lag is left.
    sender = target or f"{receiver.sender_host}:{receiver.sender_port} (sender not checked)"
    if replica.replay_lsn is None or primary.current_lsn is None:
        return decision(
            "wait",
            f"{name} streams from {sender} but its lag is unknown (replay LSN {replica.replay_lsn}, "
            f"primary LSN {primary.current_lsn}); observe it again",
        )
    lag = max(0, primary.current_lsn - replica.replay_lsn)
    bound = f"bound {fmt_bytes(max_lag_bytes)}"
    if lag > max_lag_bytes:
        paused = "; WAL replay is paused on it, resume it" if replica.replay_paused else ""
        return decision(
            "wait",
            f"{name} streams from {sender} on timeline {primary.timeline} but is {fmt_bytes(lag)} "
            f"behind {pname} ({bound}): let it catch up{paused}",
            lag_bytes=lag,
        )
    return decision(
        "nothing",
        f"{name} is healthy: streaming from {sender} on timeline {primary.timeline}, "
        f"{fmt_bytes(lag)} behind {pname} ({bound})",
        lag_bytes=lag,
    )


# The changing repairs, cheapest first: a repair that did not work is followed by a stronger one.
LADDER: tuple[RepairAction, ...] = ("repoint", "rewind", "reclone")


class Escalation(Decision):
    """After a repair that did not make the replica stream: the next repair, or why to stop."""

    node: str
    next: RepairDecision | None  # None: stop here
    reason: str


def escalate_repair(
    tried: list[RepairDecision], again: RepairDecision, *, allow_reclone: bool, max_rounds: int
) -> Escalation:
    """What to do when the repairs in ``tried`` (oldest first) left the node not streaming.

    ``again`` is the node judged anew after the last one.  Judged healthy or only behind
    (``nothing`` / ``wait``): stop, there is nothing stronger to do.  Otherwise climb the
    ladder repoint -> rewind -> reclone: the next repair is ``again``'s when it is stronger
    than the last one tried, else the next rung (repeating what just failed would fail
    again).  A reclone that ``allow_reclone`` forbids, or more than ``max_rounds`` repairs,
    stops it.
    """
    node, last = again.node, tried[-1].action
    if again.action not in LADDER:
        return Escalation(node=node, next=None, reason=f"{node} judged again: {again.reason}; no stronger repair")
    if len(tried) >= max_rounds:
        return Escalation(
            node=node,
            next=None,
            reason=f"{node} still does not stream after {len(tried)} repairs "
            f"({' then '.join(d.action for d in tried)}); giving up",
        )
    floor = LADDER.index(last) + 1 if last in LADDER else 0
    if LADDER.index(again.action) >= floor:
        step = again
    elif floor < len(LADDER):
        step = RepairDecision(
            node=node,
            action=LADDER[floor],
            lag_bytes=again.lag_bytes,
            reason=f"{node} did not stream after a {last} and was judged again ({again.reason}): "
            f"escalating to a {LADDER[floor]}",
        )
    else:
        return Escalation(
            node=node, next=None, reason=f"{node} still does not stream after a {last}, the strongest repair; giving up"
        )
    if step.action == "reclone" and not allow_reclone:
        return Escalation(node=node, next=None, reason=f"{node} needs a reclone, which allow_reclone=false forbids")
    return Escalation(node=node, next=step, reason=f"{node} still does not stream; next: {step.action}: {step.reason}")
