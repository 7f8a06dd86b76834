"""Cluster-level steps over SQL: fence writes, promote, slots, re-point replicas, wait for replay.

Every wait goes through :func:`regionops.waiting.poll_until` with a deadline.  Waits
observe with :class:`SqlObserver`, which reports an unreachable node instead of
raising, so a node that restarts mid-wait is simply "not yet".
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from pydantic import BaseModel

from regionops.decisions._common import fmt_bytes
from regionops.drivers.pgconf import slot_name
from regionops.drivers.postgres import (
    NodeState,
    SqlNode,
    conninfo_for,
    observer_for,
    replication_conninfo,
    sql_node_for,
)
from regionops.errors import DeadlineExceeded, ExternalSystemError, VerificationFailed
from regionops.lsn import Lsn
from regionops.topology import Cluster
from regionops.waiting import poll_until

log = logging.getLogger(__name__)


def sql_node(cluster: Cluster, node: str, connect_timeout: float = 3) -> SqlNode:
    """SQL access to one node of ``cluster``."""
    return sql_node_for(cluster, node, connect_timeout=connect_timeout)


def observe(cluster: Cluster, node: str, connect_timeout: float = 2) -> NodeState:
    """One node's state now (unreachable is a result, not an error)."""
    return observer_for(connect_timeout=connect_timeout).observe(node, conninfo_for(cluster, cluster.nodes[node]))


# --- fencing writes (switchover) -----------------------------------------------------------


class WriteFence(BaseModel):
    """The old primary no longer accepts writes: read-only for new transactions, sessions ended."""

    node: str
    sessions_terminated: int
    lsn: Lsn  # the primary's WAL position once no client could write any more

    def sentence(self) -> str:
        return (
            f"fenced writes on {self.node}: new transactions are read-only, "
            f"{self.sessions_terminated} client session(s) terminated, WAL at {self.lsn}"
        )


def fence_writes(cluster: Cluster, node: str, timeout: float = 10) -> WriteFence:
    """Make ``node`` refuse writes and end every client session, then read its WAL position.

    The reload is asynchronous: a session forked before the postmaster re-read its
    configuration could still write, so we wait until a fresh session sees read-only
    before terminating the old ones.
    """
    db = sql_node(cluster, node)
    db.set_config("default_transaction_read_only", "on")
    poll_until(
        lambda: db.show("default_transaction_read_only") == "on",
        timeout=timeout,
        interval=0.05,
        what=f"{node} to reload default_transaction_read_only",
    )
    terminated = db.terminate_client_sessions()
    return WriteFence(node=node, sessions_terminated=terminated, lsn=db.current_lsn())


class WriteUnfence(BaseModel):
    """A switchover that could not finish gave writes back to the old primary."""

    node: str

    def sentence(self) -> str:
        return f"gave writes back to {self.node}: default_transaction_read_only reset"


def unfence_writes(cluster: Cluster, node: str) -> WriteUnfence:
    """Undo :func:`fence_writes` (roll back a switchover before promotion)."""
    sql_node(cluster, node).set_config("default_transaction_read_only", None)
    return WriteUnfence(node=node)


class WriteFenceCleared(BaseModel):
    """A demoted old primary, now a replica, no longer carries the switchover's read-only setting."""

    node: str

    def sentence(self) -> str:
        return (
            f"cleared the switchover's read-only setting on {self.node} (as a replica it is read-only "
            f"anyway; a later promotion, even by hand, must not inherit it)"
        )


def clear_write_fence(cluster: Cluster, node: str) -> WriteFenceCleared:
    """ALTER SYSTEM RESET default_transaction_read_only on a node that now runs as a replica."""
    sql_node(cluster, node).set_config("default_transaction_read_only", None)
    return WriteFenceCleared(node=node)


# --- catching up, promoting -------------------------------------------------------------------


class CatchUp(BaseModel):
    """A replica reached (or did not reach) a WAL position."""

    node: str
    target: Lsn
    past: bool = False  # the record starting at target had to be replayed whole
    replayed: Lsn | None
    reached: bool
    seconds: float

    def sentence(self) -> str:
        need = f"past {self.target}" if self.past else f"up to {self.target}"
        if self.reached:
            return f"{self.node} replayed {need} (it is at {self.replayed}) in {self.seconds:.1f} s"
        return (
            f"{self.node} did not replay {need} within {self.seconds:.1f} s "
            f"(it is at {self.replayed or 'an unknown position'})"
        )


def wait_replayed(cluster: Cluster, node: str, target: Lsn, timeout: float, *, past: bool = False) -> CatchUp:
    """Wait until ``node`` has replayed ``target`` (strictly past it with ``past``).

    ``past`` is for a checkpoint record's start LSN: having replayed the record means
    replay ended beyond its first byte.
    """
    started = time.monotonic()
    seen: list[Lsn | None] = [None]

    def replayed() -> bool:
        state = observe(cluster, node)
        seen[0] = state.replay_lsn if state.role == "replica" else state.current_lsn
        if seen[0] is None:
            return False
        return seen[0] > target if past else seen[0] >= target

    try:
        poll_until(replayed, timeout=timeout, interval=0.05, what=f"{node} to replay {target}")
        reached = True
    except DeadlineExceeded:
        reached = False
    return CatchUp(
        node=node,
        target=target,
        past=past,
        replayed=seen[0],
        reached=reached,
        seconds=round(time.monotonic() - started, 2),
    )


def replay_received(cluster: Cluster, targets: dict[str, Lsn], timeout: float) -> dict[str, NodeState]:
    """Wait until each replica in ``targets`` replayed its position (one shared deadline); their states then.

    A replica that does not get there in time is simply observed as it is: the
    promotion ranking reads what it holds.
    """
    deadline = time.monotonic() + timeout
    for node, target in targets.items():
        wait_replayed(cluster, node, target, max(0.0, deadline - time.monotonic()))
    return {node: observe(cluster, node) for node in targets}


class Promotion(BaseModel):
    """A replica became the primary."""

    node: str
    promoted_lsn: Lsn | None  # how far it had replayed (or received) when promoted: the fork point
    timeline: int | None
    last_replayed_commit_at: datetime | None = None
    seconds: float

    def sentence(self) -> str:
        return f"promoted {self.node} at LSN {self.promoted_lsn} on timeline {self.timeline} in {self.seconds:.1f} s"


def promote(cluster: Cluster, node: str, timeout: int = 60) -> Promotion:
    """Promote ``node`` and make it a plain primary.

    Afterwards the settings that made it a replica, or fenced it as a demoted primary
    (primary_conninfo, primary_slot_name, default_transaction_read_only), are reset in
    one reload so it takes writes at once and carries no stale pointer to its old primary.
    """
    started = time.monotonic()
    before = observe(cluster, node)
    positions = [p for p in (before.replay_lsn, before.receive_lsn) if p is not None]
    db = sql_node(cluster, node)
    if not db.promote(wait_seconds=timeout):
        raise ExternalSystemError(f"{node} did not finish promotion within {timeout} s")
    db.set_configs({"primary_conninfo": None, "primary_slot_name": None, "default_transaction_read_only": None})
    poll_until(
        lambda: db.show("default_transaction_read_only") == "off",
        timeout=10,
        interval=0.05,
        what=f"{node} to accept writes",
    )
    after = observe(cluster, node)
    return Promotion(
        node=node,
        promoted_lsn=max(positions) if positions else after.current_lsn,
        timeline=after.timeline,
        last_replayed_commit_at=db.last_replay_timestamp(),
        seconds=round(time.monotonic() - started, 2),
    )


class Checkpoint(BaseModel):
    """A checkpoint forced on a node."""

    node: str
    timeline: int | None

    def sentence(self) -> str:
        return f"checkpointed {self.node} (timeline {self.timeline}) so pg_rewind reads its current timeline"


def checkpoint(cluster: Cluster, node: str) -> Checkpoint:
    """CHECKPOINT, so the node's pg_control reflects its current timeline.

    pg_rewind reads the source's timeline from its pg_control, which a freshly promoted
    primary only updates at its first checkpoint after promotion.
    """
    sql_node(cluster, node).checkpoint()
    return Checkpoint(node=node, timeline=observe(cluster, node).timeline)


# --- slots and re-pointing ---------------------------------------------------------------------


class SlotsEnsured(BaseModel):
    """Replication slots on a primary, one per other node."""

    primary: str
    created: list[str]
    existing: list[str]

    def sentence(self) -> str:
        made = ", ".join(self.created) or "none"
        had = ", ".join(self.existing) or "none"
        return f"replication slots on {self.primary}: created {made}; already there {had}"


def ensure_slots(cluster: Cluster, primary: str, nodes: list[str]) -> SlotsEnsured:
    """Create the slot of every node in ``nodes`` on ``primary`` (so it keeps their WAL)."""
    db = sql_node(cluster, primary)
    created: list[str] = []
    existing: list[str] = []
    for node in nodes:
        (created if db.ensure_slot(slot_name(node)) else existing).append(slot_name(node))
    return SlotsEnsured(primary=primary, created=created, existing=existing)


class SlotsDropped(BaseModel):
    """Slots left on a node from when it was primary, dropped now that it is a replica."""

    node: str
    dropped: list[str]

    def sentence(self) -> str:
        return (
            f"dropped stale slot(s) {', '.join(self.dropped)} on {self.node}"
            if self.dropped
            else (f"{self.node} holds no stale slot")
        )


def drop_stale_slots(cluster: Cluster, node: str) -> SlotsDropped:
    """Drop every inactive slot on a replica: left from its time as primary, they pin WAL forever."""
    db = sql_node(cluster, node)
    return SlotsDropped(node=node, dropped=[s for s in db.slot_names() if db.drop_slot(s)])


class Repoint(BaseModel):
    """A running replica now streams (or will) from a new primary."""

    node: str
    primary: str
    slot: str

    def sentence(self) -> str:
        return f"pointed {self.node} at {self.primary} (primary_conninfo, slot {self.slot}) and reloaded"


def repoint_replica(cluster: Cluster, node: str, primary: str) -> Repoint:
    """ALTER SYSTEM primary_conninfo and primary_slot_name on a running replica, one reload.

    The WAL receiver restarts on reload and, with recovery_target_timeline 'latest'
    (PostgreSQL's default), follows the new primary's timeline switch.
    """
    sql_node(cluster, node).set_configs(
        {"primary_conninfo": replication_conninfo(cluster, primary, node), "primary_slot_name": slot_name(node)}
    )
    return Repoint(node=node, primary=primary, slot=slot_name(node))


# --- verification ------------------------------------------------------------------------------


class StreamingCheck(BaseModel):
    """Whether a replica streams from the primary within a lag bound."""

    node: str
    primary: str
    ok: bool
    timeline: int | None = None
    lag_bytes: int | None = None
    max_lag_bytes: int
    detail: str
    seconds: float

    def sentence(self) -> str:
        return self.detail


def _streaming_from(state: NodeState, primary_host: str, primary_port: int) -> bool:
    receiver = state.wal_receiver
    return bool(
        state.reachable
        and state.role == "replica"
        and receiver
        and receiver.status == "streaming"
        and (receiver.sender_host or "").rstrip(".").lower() == primary_host.rstrip(".").lower()
        and receiver.sender_port in (None, primary_port)
    )


def wait_streaming(cluster: Cluster, node: str, primary: str, max_lag_bytes: int, timeout: float) -> StreamingCheck:
    """Wait until ``node`` streams from ``primary`` with lag at most ``max_lag_bytes``."""
    started = time.monotonic()
    spec = cluster.nodes[primary]
    seen: NodeState | None = None
    lag: int | None = None

    def healthy() -> bool:
        nonlocal seen, lag
        seen = observe(cluster, node)
        head = observe(cluster, primary)
        if head.current_lsn is None or seen.replay_lsn is None:
            return False
        lag = max(0, head.current_lsn - seen.replay_lsn)
        # A rewound node first streams the old timeline up to the fork, then switches
        # (its receiver shows "waiting" in between): only the primary's timeline counts.
        same_timeline = seen.timeline is None or head.timeline is None or seen.timeline == head.timeline
        return _streaming_from(seen, spec.host, spec.port) and same_timeline and lag <= max_lag_bytes

    try:
        poll_until(healthy, timeout=timeout, interval=0.2, what=f"{node} streaming from {primary}")
        ok = True
    except DeadlineExceeded:
        ok = False
    seconds = round(time.monotonic() - started, 2)
    timeline = seen.timeline if seen else None
    if ok:
        detail = (
            f"{node} streams from {primary} on timeline {timeline}, {fmt_bytes(lag or 0)} behind "
            f"(bound {fmt_bytes(max_lag_bytes)})"
        )
    else:
        state = seen.sentence() if seen else "never observed"
        lagging = f", {fmt_bytes(lag)} behind" if lag is not None else ""
        detail = (
            f"{node} does not stream from {primary} within bound {fmt_bytes(max_lag_bytes)} "
            f"after {seconds:.0f} s: {state}{lagging}"
        )
    return StreamingCheck(
        node=node,
        primary=primary,
        ok=ok,
        timeline=timeline,
        lag_bytes=lag,
        max_lag_bytes=max_lag_bytes,
        detail=detail,
        seconds=seconds,
    )


def require(check: StreamingCheck | CatchUp) -> None:
    """Raise VerificationFailed with the check's sentence when it did not pass."""
    ok = check.ok if isinstance(check, StreamingCheck) else check.reached
    if not ok:
        raise VerificationFailed(check.sentence())
