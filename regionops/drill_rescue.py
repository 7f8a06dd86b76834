"""Making a cluster safe after a DR drill was cancelled half-way.

The drill's process is gone (the runner killed it); its fault may still be in place and
its recovery may have stopped at any step.  :func:`rescue_cluster` observes the
cluster, asks the pure :func:`regionops.decisions.drill.decide_rescue` what leaves
exactly one writable primary named by the writer record, and does only that: what needs
a runbook (rewinding the old primary, re-cloning a lost replica) is left to
replica-resync and named.
"""

from __future__ import annotations

import logging
from datetime import datetime

from regionops.decisions.drill import RescueAction, decide_rescue
from regionops.drivers.postgres import conninfo_for, observer_for
from regionops.errors import RunbookError
from regionops.fault_injectors import fault_injector_for
from regionops.ha import sqlsteps
from regionops.ha.fencing import Fencer, FenceStore
from regionops.ha.writer import switch_writer, writer_node
from regionops.node import NodeOperator, node_operator_for
from regionops.topology import Topology

log = logging.getLogger(__name__)


def rescue_cluster(
    topology: Topology, cluster: str, fault: str | None, target: str | None, since: datetime | None = None
) -> list[str]:
    """Leave exactly one writable primary that the writer record names.  Returns what was done, as sentences.

    ``since``: when the drill took the cluster lock; a fence laid after it is the drill's own.
    """
    c = topology.clusters[cluster]
    observer = observer_for(connect_timeout=2)
    states = {n: observer.observe(n, conninfo_for(c, spec)) for n, spec in c.nodes.items()}
    ops = node_operator_for(topology, cluster)
    frozen, fenced_on_disk, unread = _disk_facts(ops, target)
    marker = FenceStore.for_topology(topology).get(cluster, target) if target else None
    ours = bool(marker and since and marker.fenced_at >= since)
    actions = decide_rescue(
        fault or "",
        target,
        states,
        writer_node(topology, cluster),
        target_frozen=frozen,
        target_fenced_on_disk=fenced_on_disk,
        fenced_by_this_drill=ours,
    )
    if not actions:
        return unread + [
            "the cluster has exactly one writable primary and the writer record names it: nothing to do"
            + (f"; run replica-resync to bring {target} back" if target and not states[target].reachable else "")
        ]
    return unread + [_apply(topology, cluster, ops, action, fault) for action in actions]


def _disk_facts(ops: NodeOperator, target: str | None) -> tuple[bool, bool, list[str]]:
    """Whether the drill's target is frozen and fenced on disk (read through the node seam), and what was unreadable."""
    if not target:
        return False, False, []
    try:
        return ops.is_frozen(target), ops.primary_start_blocked(target), []
    except RunbookError as exc:
        log.warning("reading %s's process and disk failed: %s", target, exc)
        return False, False, [f"could not read whether {target} is frozen or fenced on disk: {exc}"]


def _apply(topology: Topology, cluster: str, ops: NodeOperator, action: RescueAction, fault: str | None) -> str:
    node = action.node
    try:
        if action.kind == "resume" and node:
            return fault_injector_for(topology).resume("primary-freeze", cluster, node).sentence()
        if action.kind == "start-app" and node:
            return fault_injector_for(topology).resume("region-outage", cluster, node).sentence()
        if action.kind == "kill" and node:
            stopped = ops.stop(node, "immediate").sentence()
            return f"{stopped}; {ops.block_primary_start(node).sentence()}"
        if action.kind == "start" and node:
            return ops.start(node).sentence()
        if action.kind == "unfence-start" and node:
            return _unfence_and_start(topology, cluster, ops, node)
        if action.kind == "fence-writes" and node:
            return sqlsteps.fence_writes(topology.clusters[cluster], node).sentence()
        if action.kind == "point-writer" and node:
            return switch_writer(topology, cluster, node, fences=FenceStore.for_topology(topology)).sentence()
        return f"needs a human: {action.sentence()}"
    except RunbookError as exc:
        log.warning("rescue step %s failed: %s", action.kind, exc)
        return f"could not {action.kind} {node}: {exc}"


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
