"""The one approval design: a typed form in the Prefect UI before a runbook's first change.

The run pauses (``pause_flow_run(wait_for_input=ApprovalForm)``); the Prefect UI shows
the plan and a form with three fields.  OSS Prefect has no user identity, so the
approver types their name; they say why; and they type the exact confirmation phrase
the runbook asks for (e.g. ``promote us-1``): a click alone is too easy at 3 a.m.
A wrong phrase or a blank name is a rejection, and the runbook stops having changed
nothing.  Who approved and why go into the run's report and its Slack thread.
"""

from __future__ import annotations

from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import BaseModel, Field

from regionops.errors import ApprovalRejected
from regionops.runbook.reporting import RunReporter

# How often the paused run looks for an answer: short, so an approval takes effect at once.
POLL_SECONDS = 1


class ApprovalForm(RunInput):
    """What the approver types into the paused run's form in the Prefect UI."""

    approver: str = Field(description="Your name (Prefect OSS has no users): it goes into the report and Slack")
    reason: str = Field(description="Why you approve (or reject): it goes into the report and Slack")
    confirm: str = Field(description="Type the confirmation phrase shown above to approve; anything else rejects")


class Approval(BaseModel):
    """A given approval: who, why, and the phrase they typed."""

    approver: str
    reason: str
    phrase: str

    def sentence(self) -> str:
        """One line for the report and the Slack thread."""
        return f"approved by {self.approver}: {self.reason or 'no reason given'} (typed '{self.phrase}')"


def judge_answer(answer: ApprovalForm, phrase: str, on_reject: str = "nothing was changed") -> Approval:
    """The approval ``answer`` gives, or ApprovalRejected naming what was wrong with it."""
    typed, who = answer.confirm.strip(), answer.approver.strip()
    by = f" by {who}" if who else ""
    why = f" ({answer.reason.strip()})" if answer.reason.strip() else ""
    if typed != phrase:
        raise ApprovalRejected(f"approval rejected{by}{why}: expected '{phrase}', got '{typed}'; {on_reject}")
    if not who:
        raise ApprovalRejected(f"approval rejected: the approver's name is blank; {on_reject}")
    return Approval(approver=who, reason=answer.reason.strip(), phrase=phrase)


def approval_description(plan: list[str], phrase: str, on_reject: str) -> str:
    """The markdown shown above the form: the plan and what to type."""
    return "\n".join(
        [
            "### The runbook will do this",
            *[f"1. {step}" for step in plan],
            "",
            f"Type your name into *approver*, why into *reason*, and **`{phrase}`** into *confirm* to approve. "
            f"A different phrase rejects: {on_reject}.",
        ]
    )


def request_approval(
    reporter: RunReporter, plan: list[str], phrase: str, timeout_seconds: int, *, on_reject: str = "nothing was changed"
) -> Approval:
    """Pause until someone fills the form with ``phrase``; return the approval.  Raises ApprovalRejected otherwise.

    A pause that times out fails the run (Prefect's behaviour), which is a rejection too.
    ``on_reject`` says what a rejection does (a release between waves rolls back).
    """
    reporter.step(f"waiting for approval: fill the paused run's form in the Prefect UI and type '{phrase}'")
    answer = pause_flow_run(
        wait_for_input=ApprovalForm.with_initial_data(
            description=approval_description(plan, phrase, on_reject), approver="", reason="", confirm=""
        ),
        timeout=timeout_seconds,
        poll_interval=POLL_SECONDS,
    )
    try:
        approval = judge_answer(answer, phrase, on_reject)
    except ApprovalRejected as exc:
        reporter.step(str(exc))
        raise
    reporter.approval = approval.sentence()
    reporter.step(approval.sentence())
    return approval
