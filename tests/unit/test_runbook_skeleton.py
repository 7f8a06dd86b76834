"""The runbook skeleton's pure parts: the shared parameter block and judging an approval form."""

from __future__ import annotations

import pytest

from flows.backup import BackupParams
from flows.failover import FailoverParams
from flows.replica_resync import ResyncParams
from flows.restore import RestoreParams
from flows.switchover import SwitchoverParams
from regionops.errors import ApprovalRejected
from regionops.runbook.approval import ApprovalForm, judge_answer
from regionops.runbook.params import ClusterChangeParams

SHARED = (
    "topology",
    "cluster",
    "dry_run",
    "require_approval",
    "approval_timeout_seconds",
    "lock_wait_seconds",
    "notify",
)


@pytest.mark.parametrize("model", [SwitchoverParams, FailoverParams, ResyncParams, BackupParams, RestoreParams])
def test_every_changing_runbook_shares_the_block_with_descriptions(model: type[ClusterChangeParams]) -> None:
    assert issubclass(model, ClusterChangeParams)
    for name in SHARED:
        assert model.model_fields[name].description, (model.__name__, name)


def test_a_blank_optional_field_is_none_but_a_blank_required_one_stays() -> None:
    # An alert template renders a missing label as "".
    assert FailoverParams(node="", reason="", topology="").node is None
    assert SwitchoverParams(target="").target is None
    assert ResyncParams(node="", cluster="").cluster is None
    assert RestoreParams(node="", label="", target="").label is None
    assert RestoreParams(node="eu-2").node == "eu-2"
    assert FailoverParams(node="eu-1").node == "eu-1"


def test_defaults_that_differ_per_runbook() -> None:
    assert RestoreParams(node="eu-2").require_approval and not SwitchoverParams().require_approval
    assert FailoverParams().approval_timeout_seconds == 900 and RestoreParams(node="x").lock_wait_seconds == 30


def form(confirm: str, approver: str = "Ada", reason: str = "planned") -> ApprovalForm:
    return ApprovalForm(approver=approver, reason=reason, confirm=confirm)


def test_the_right_phrase_and_a_name_approve() -> None:
    approval = judge_answer(form("  promote us-1 "), "promote us-1")
    assert approval.sentence() == "approved by Ada: planned (typed 'promote us-1')"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (form("yes"), "approval rejected by Ada (planned): expected 'promote us-1', got 'yes'; nothing was changed"),
        (form("promote apac-1", reason=""), "rejected by Ada: expected 'promote us-1', got 'promote apac-1'"),
        (form("promote us-1", approver=" "), "the approver's name is blank; nothing was changed"),
    ],
)
def test_a_wrong_phrase_or_no_name_rejects(answer: ApprovalForm, message: str) -> None:
    with pytest.raises(ApprovalRejected) as err:
        judge_answer(answer, "promote us-1")
    assert message in str(err.value)
