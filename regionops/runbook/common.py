"""Pieces shared by the runbooks that change a cluster.

Ending a run with the right words: a refusal
("nothing was changed") is not the same news as a failure half-way.
:mod:`regionops.runbook.context` puts these together with the lock for one run.
"""

from __future__ import annotations

from typing import Any

from regionops.errors import ApprovalRejected, PreconditionFailed, RolledBack
from regionops.runbook.reporting import RunReporter


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


def subflow_outcome(what: str, state: Any, *, prefix: bool = True) -> str:
    """A subflow's final state as one line: its result's sentence (after ``what``), or its error."""
    try:
        sentence = state.result().sentence()
        return f"{what}: {sentence}" if prefix else sentence
    except Exception as exc:  # noqa: BLE001 - reported as the step's outcome
        return f"{what} {state.name.lower()}: {type(exc).__name__}: {exc}"
