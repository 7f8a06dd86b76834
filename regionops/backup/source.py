"""Which node a backup reads from: a pure decision over observed node states.

A healthy replica spares the primary the read load; among healthy replicas the one in
the bucket's region wins (shorter path for the upload), then the higher priority.
The primary is used only when no replica is healthy.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel

from regionops.drivers.postgres import NodeState
from regionops.errors import PreconditionFailed
from regionops.topology import Cluster, HealthThresholds


class SourceChoice(BaseModel):
    """The node to back up from and why."""

    node: str
    role: str
    reason: str

    def sentence(self) -> str:
        """One line for the report."""
        return f"backing up from {self.node} ({self.role}): {self.reason}"


def _primary(states: Mapping[str, NodeState]) -> NodeState | None:
    primaries = [s for s in states.values() if s.reachable and s.role == "primary"]
    return primaries[0] if len(primaries) == 1 else None


def replica_problem(state: NodeState, primary: NodeState | None, limits: HealthThresholds) -> str | None:
    """Why ``state`` is not a healthy replica to back up from (None when it is)."""
    if not state.reachable:
        return f"unreachable ({state.error})"
    if state.role != "replica":
        return f"is {state.role}"
    if not state.wal_receiver or state.wal_receiver.status != "streaming":
        return "not streaming"
    if state.replay_lag_seconds is not None and state.replay_lag_seconds > limits.max_lag_seconds:
        return f"{state.replay_lag_seconds:.0f} s behind"
    if primary and primary.current_lsn and state.replay_lsn:
        lag = primary.current_lsn - state.replay_lsn
        if lag > limits.max_lag_bytes:
            return f"{lag} bytes behind"
    return None


def choose_source(
    cluster: Cluster,
    states: Mapping[str, NodeState],
    limits: HealthThresholds,
    *,
    bucket_region: str,
    requested: str | None = None,
) -> SourceChoice:
    """The node to back up from.  PreconditionFailed when none can serve a backup."""
    if requested is not None:
        state = states.get(requested)
        if state is None:
            raise PreconditionFailed(f"node {requested!r} is not a node of this cluster")
        if not state.reachable:
            raise PreconditionFailed(f"the requested source {requested} is unreachable ({state.error})")
        return SourceChoice(node=requested, role=state.role, reason="named by the parameters")
    primary = _primary(states)
    healthy = [
        name for name, s in states.items() if s.role == "replica" and replica_problem(s, primary, limits) is None
    ]
    if healthy:
        best = max(
            healthy,
            key=lambda n: (cluster.nodes[n].region == bucket_region, cluster.nodes[n].priority, n),
        )
        return SourceChoice(node=best, role="replica", reason="a healthy replica, so the primary is not loaded")
    if primary is not None:
        skipped = "; ".join(
            f"{n} {replica_problem(s, primary, limits)}" for n, s in sorted(states.items()) if s is not primary
        )
        return SourceChoice(node=primary.node, role="primary",
                            reason=f"no healthy replica ({skipped or 'the cluster has none'})")
    raise PreconditionFailed(
        "no node can serve a backup: "
        + "; ".join(f"{n}: {s.sentence()}" for n, s in sorted(states.items()))
    )
