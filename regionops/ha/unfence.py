"""The explicit unfence: a human takes a node's fence away, deliberately and on the record.

Replica resync clears a fence by itself once the node verifiably streams from the
primary.  Everything else (a node rebuilt by hand, a fence recorded in error) goes
through here: the operator names the node twice (``confirm``), gives a reason, and the
unfence is refused while the node takes writes beside another primary (that is a split
brain to fence, not a fence to lift).  The cleared record is kept in the home bucket
with who cleared it and why, and the unfence is posted to Slack.
"""

from __future__ import annotations

from regionops.drivers.notify import notifier_for
from regionops.errors import ConfigurationError, PreconditionFailed
from regionops.ha.fencing import FenceCleared, Fencer, FenceStore
from regionops.ha.sqlsteps import observe
from regionops.health import writable
from regionops.topology import Topology


def unfence(
    topology: Topology,
    cluster: str,
    node: str,
    *,
    reason: str,
    confirm: str,
    by: Fencer,
    fences: FenceStore | None = None,
) -> FenceCleared:
    """Clear ``node``'s fence; refuses (changing nothing) unless deliberate and safe."""
    topology.node(cluster, node)  # unknown cluster or node: an error naming the known ones
    if confirm != node:
        raise ConfigurationError(f"unfence of {node} not confirmed: pass --confirm {node}")
    if not reason.strip():
        raise ConfigurationError("unfence needs a reason (--reason), kept with the cleared record")
    fences = fences or FenceStore.for_topology(topology)
    if fences.get(cluster, node) is None:
        raise PreconditionFailed(f"{node} of {cluster} is not fenced; nothing to clear")
    spec = topology.clusters[cluster]
    states = {n: observe(spec, n) for n in spec.nodes}
    others = [n for n, s in states.items() if n != node and writable(s)]
    if writable(states[node]) and others:
        raise PreconditionFailed(
            f"refusing to unfence {node}: it takes writes while {', '.join(others)} is primary (split brain); "
            f"region health fences it again, then replica-resync rebuilds it"
        )
    cleared = fences.clear(cluster, node, by=by, reason=reason)
    if cleared is None:
        raise PreconditionFailed(f"{node}'s fence was cleared by someone else meanwhile")
    notifier_for(topology).alert(f"Fence of {node} ({cluster}) cleared by hand", [cleared.sentence()])
    return cleared
