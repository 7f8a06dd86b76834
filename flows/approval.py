"""A typed human approval before a runbook's first change.

The run pauses (``pause_flow_run(wait_for_input=...)``); the Prefect UI shows the plan
and a form.  Approving means typing the exact phrase the runbook asks for (e.g.
``promote us-1``): a click alone is too easy at 3 a.m.  Anything else rejects, and the
runbook stops having changed nothing.
"""

from __future__ import annotations

from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from flows.reporting import RunReporter
from regionops.errors import ApprovalRejected

# How often the paused run looks for an answer: short, so an approval takes effect at once.
POLL_SECONDS = 1


class Approval(RunInput):
    """What the approver types into the paused run's form in the Prefect UI."""

    confirm: str = Field(description="Type the phrase shown above to approve; anything else rejects")
    comment: str = Field("", description="Optional: who approves and why (goes into the report)")


def request_approval(reporter: RunReporter, plan: list[str], phrase: str, timeout_seconds: int,
                     *, on_reject: str = "nothing was changed") -> str:
    """Pause until someone types ``phrase``; return their comment.  Raises ApprovalRejected otherwise.

    A pause that times out fails the run (Prefect's behaviour), which is a rejection too.
    ``on_reject`` says what a rejection does (a release between waves rolls back).
    """
    description = "\n".join(
        ["### The runbook will do this", *[f"1. {step}" for step in plan], "",
         f"Type **`{phrase}`** into *confirm* to approve. Anything else rejects: {on_reject}."]
    )
    reporter.step(f"waiting for approval: type '{phrase}' in the paused run's form in the Prefect UI")
    answer = pause_flow_run(
        wait_for_input=Approval.with_initial_data(description=description, confirm=""),
        timeout=timeout_seconds,
        poll_interval=POLL_SECONDS,
    )
    if answer.confirm.strip() != phrase:
        raise ApprovalRejected(
            f"approval rejected: expected '{phrase}', got '{answer.confirm.strip()}'; {on_reject}"
        )
    who = f" ({answer.comment})" if answer.comment else ""
    reporter.step(f"approved{who}")
    return answer.comment
