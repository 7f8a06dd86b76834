"""Making a cluster safe after a DR drill or a switchover was killed half-way.

The run's process is gone (the runner killed it); a drill's fault may still be in place,
its recovery may have stopped at any step, and a switchover may have stopped the old
primary without promoting the target yet.  :func:`rescue_cluster` observes the cluster,
asks the pure :func:`regionops.decisions.rescue.decide_rescue` what leaves exactly one
writable primary named by the writer record, and does only that: what needs a runbook
(rewinding the old primary, re-cloning a lost replica) is left to replica-resync and named.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from regionops.decisions.rescue import RescueAction, SwitchoverWindow, decide_rescue
from regionops.drivers.postgres import conninfo_for, observer_for
from regionops.errors import DeadlineExceeded, RunbookError
from regionops.fault_injectors import fault_injector_for
from regionops.ha import sqlsteps
from regionops.ha.fencing import Fencer, FenceStore
from regionops.ha.writer import switch_writer, writer_node
from regionops.model import NodeState
from regionops.model.faults import FaultName
from regionops.node import NodeOperator, node_operator_for
from regionops.topology import Topology
from regionops.waiting import poll_until

log = logging.getLogger(__name__)

# How long a target that may have received pg_promote gets to finish promoting before the
# rescue calls it "not promoted" (a promotion that started completes in about a second).
PROMOTION_GRACE_SECONDS = 10.0


def rescue_cluster(
    topology: Topology,
    cluster: str,
    fault: str | None,
    target: str | None,
    since: datetime | None = None,
    window: SwitchoverWindow | None = None,
) -> list[str]:
    """Leave exactly one writable primary that the writer record names.  Returns what was done, as sentences.

    ``fault`` and ``target``: the drill's (None for a switchover).  ``since``: when the run
    took the cluster lock; a fence laid after it is the run's own.  ``window``: where a
    switchover was when it was killed (its journal), if one was running.
    """
    c = topology.clusters[cluster]
    observer = observer_for(connect_timeout=2)
    states = {n: observer.observe(n, conninfo_for(c, spec)) for n, spec in c.nodes.items()}
    if window is not None and window.phase == "promoting" and window.new in states:
        states[window.new] = _await_promotion(topology, cluster, window.new, states[window.new])
    ops = node_operator_for(topology, cluster)
    fences = FenceStore.for_topology(topology)
    frozen, fenced_on_disk, unread = _disk_facts(ops, target)
    marker = fences.get(cluster, target) if target else None
    ours = bool(marker and since and marker.fenced_at >= since)
    writer = writer_node(topology, cluster)
    writer_fenced, unread_writer = _writer_fenced(ops, fences, cluster, writer, states)
    actions = decide_rescue(
        fault or "",
        target,
        states,
        writer,
        target_frozen=frozen,
        target_fenced_on_disk=fenced_on_disk,
        fenced_by_this_drill=ours,
        window=window,
        writer_fenced=writer_fenced,
    )
    unread += unread_writer
    if not actions:
        return unread + [
            "the cluster has exactly one writable primary and the writer record names it: nothing to do"
            + (f"; run replica-resync to bring {target} back" if target and not states[target].reachable else "")
        ]
    done: list[str] = []
    for action in actions:
        sentence, ok = _apply(topology, cluster, ops, action, fault)
        done.append(sentence)
        if not ok and action.stop_if_failed:
            done.append(f"stopped here: the steps after it are only safe once {action.kind} {action.node} is done")
            break
    return unread + done


def rescue_switchover(topology: Topology, cluster: str, record: dict[str, Any]) -> list[str]:
    """A cancelled switchover's undo (its cancel hook), from what its journal says it disturbed."""
    window = switchover_window(record)
    if window is None:
        return ["the switchover was cancelled before it stopped writes on the primary: nothing to undo"]
    since = datetime.fromisoformat(record["locked_at"]) if record.get("locked_at") else None
    return rescue_cluster(topology, cluster, None, None, since, window)


def switchover_window(record: dict[str, Any]) -> SwitchoverWindow | None:
    """Where a switchover was, from its journal record (None when it recorded nothing)."""
    if not record.get("phase"):
        return None
    return SwitchoverWindow(old=record["old"], new=record["new"], phase=record["phase"])


def _await_promotion(topology: Topology, cluster: str, node: str, state: NodeState) -> NodeState:
    """The target may have received pg_promote before the kill: let a started promotion finish first."""
    observer = observer_for(connect_timeout=2)
    info = conninfo_for(topology.clusters[cluster], topology.clusters[cluster].nodes[node])

    def promoted() -> NodeState | None:
        now = observer.observe(node, info)
        return now if now.reachable and now.role == "primary" else None

    if state.reachable and state.role == "primary":
        return state
    try:
        return poll_until(promoted, timeout=PROMOTION_GRACE_SECONDS, interval=0.2, what=f"{node} to finish promoting")
    except DeadlineExceeded:
        return observer.observe(node, info)


def _disk_facts(ops: NodeOperator, target: str | None) -> tuple[bool, bool, list[str]]:
    """Whether the drill's target is frozen and fenced on disk (read through the node seam), and what was unreadable."""
    if not target:
        return False, False, []
    try:
        return ops.is_frozen(target), ops.primary_start_blocked(target), []
    except RunbookError as exc:
        log.warning("reading %s's process and disk failed: %s", target, exc)
        return False, False, [f"could not read whether {target} is frozen or fenced on disk: {exc}"]


def _writer_fenced(
    ops: NodeOperator, fences: FenceStore, cluster: str, writer: str | None, states: dict[str, NodeState]
) -> tuple[bool, list[str]]:
    """Whether the writer record's node is fenced (record or standby.signal); read only when no node takes writes.

    Unreadable counts as fenced: the rescue then names the problem instead of starting it.
    """
    if writer is None or any(s.reachable and s.role == "primary" and not s.read_only for s in states.values()):
        return False, []
    try:
        if fences.get(cluster, writer) is not None:
            return True, []
        return ops.primary_start_blocked(writer), []
    except Exception as exc:  # noqa: BLE001 - unreadable counts as fenced
        log.warning("reading whether %s is fenced failed: %s", writer, exc)
        return True, [f"could not read whether {writer} is fenced, so it is treated as fenced: {exc}"]


def _apply(
    topology: Topology, cluster: str, ops: NodeOperator, action: RescueAction, fault: str | None
) -> tuple[str, bool]:
    """Do one rescue step; its sentence, and whether it was done."""
    node = action.node
    try:
        if action.kind == "resume" and node:
            return fault_injector_for(topology).resume("primary-freeze", cluster, node).sentence(), True
        if action.kind == "start-app" and node:
            region_fault: FaultName = "region-partition" if fault == "region-partition" else "region-outage"
            return fault_injector_for(topology).resume(region_fault, cluster, node).sentence(), True
        if action.kind == "kill" and node:
            stopped = ops.stop(node, "immediate").sentence()
            return f"{stopped}; {ops.block_primary_start(node).sentence()}", True
        if action.kind == "block-start" and node:
            return ops.block_primary_start(node).sentence(), True
        if action.kind == "start" and node:
            return ops.start(node).sentence(), True
        if action.kind == "restore-writer" and node:
            started = ops.start(node).sentence()
            return f"{started}; {sqlsteps.unfence_writes(topology.clusters[cluster], node).sentence()}", True
        if action.kind == "unfence-start" and node:
            return _unfence_and_start(topology, cluster, ops, node), True
        if action.kind == "fence-writes" and node:
            return sqlsteps.fence_writes(topology.clusters[cluster], node).sentence(), True
        if action.kind == "point-writer" and node:
            return switch_writer(topology, cluster, node, fences=FenceStore.for_topology(topology)).sentence(), True
        return f"needs a human: {action.sentence()}", False
    except Exception as exc:  # noqa: BLE001 - every step's outcome is reported; the rescue goes on
        log.warning("rescue step %s failed: %s", action.kind, exc)
        return f"could not {action.kind} {node}: {exc}", False


def _unfence_and_start(topology: Topology, cluster: str, ops: NodeOperator, node: str) -> str:
    """Undo a fence the cancelled drill's own failover laid: no standby.signal, no record, started as primary."""
    ops.allow_primary_start(node)
    cleared = FenceStore.for_topology(topology).clear(
        cluster,
        node,
        by=Fencer(runbook="dr-drill rescue"),
        reason="the cancelled drill's failover fenced it but promoted nobody",
    )
    started = ops.start(node).sentence()
    return f"lifted the drill's own fence of {node} ({'record cleared' if cleared else 'no record'}); {started}"
