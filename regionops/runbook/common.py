"""Pieces shared by the runbooks that change a cluster.

Observing a cluster in parallel, and ending a run with the right words: a refusal
("nothing was changed") is not the same news as a failure half-way.
:mod:`regionops.runbook.context` puts these together with the lock for one run.
"""

from __future__ import annotations

from regionops.errors import ApprovalRejected, PreconditionFailed, RolledBack
from regionops.model import NodeState
from regionops.runbook.reporting import RunReporter
from regionops.topology import Topology
from tasks.observe import observe_node


class Progress:
    """Whether a run has changed anything yet: decides whether a failure reads "refused" or "failed"."""

    def __init__(self) -> None:
        self.changed = False


def observe_cluster(topology: Topology, cluster: str, nodes: list[str] | None = None) -> dict[str, NodeState]:
    """Every node's state, observed in parallel (unreachable nodes are states too)."""
    names = nodes if nodes is not None else list(topology.clusters[cluster].nodes)
    futures = {name: observe_node.submit(topology, cluster, name) for name in names}
    return {name: fut.result() for name, fut in futures.items()}


def refuse(reporter: RunReporter, reason: str) -> PreconditionFailed:
    """Record a refusal as a step and return the error to raise (the caller raises it)."""
    message = reason if "nothing was changed" in reason else f"{reason}; nothing was changed"
    reporter.step(f"refused: {message}")
    return PreconditionFailed(message)


def report_error(reporter: RunReporter, exc: BaseException, changed: bool, tables: dict | None = None) -> None:
    """Finish the run's report for an error: refused / rejected (nothing changed) or failed.

    A report the run already finished (e.g. "failed" with its tables) is not written twice.
    """
    if reporter.status is not None:
        return
    if isinstance(exc, ApprovalRejected):
        status = "rejected"
    elif isinstance(exc, PreconditionFailed) and not changed:
        status = "refused"
    elif isinstance(exc, RolledBack):
        status = "rolled back"
    else:
        status = "failed"
    summary = [f"{type(exc).__name__}: {exc}"]
    if status == "rolled back":
        summary.append("the change was undone: read the steps below for what was restored")
    if status == "failed" and changed:
        summary.append("the cluster WAS changed before the failure: read the steps below before acting")
    reporter.finish(status, summary, tables=tables)


def plan_table(plan: list[str]) -> list[dict[str, object]]:
    """The plan as table rows for the report."""
    return [{"step": i, "action": line} for i, line in enumerate(plan, start=1)]
