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


def test_a_changed_default_keeps_the_shared_description_and_bounds() -> None:
    shared = ClusterChangeParams.model_fields
    for model, name, default in [
        (RestoreParams, "require_approval", True),
        (RestoreParams, "approval_timeout_seconds", 3600),
        (RestoreParams, "lock_wait_seconds", 30),
        (FailoverParams, "approval_timeout_seconds", 900),
    ]:
        field = model.model_fields[name]
        assert field.default == default, (model.__name__, name)
        assert field.description == shared[name].description and field.metadata == shared[name].metadata
        schema = model.model_json_schema()["properties"][name]
        assert schema["default"] == default and schema["description"] == shared[name].description
    assert BackupParams().lock_wait_seconds == 60 and "another backup" in str(
        BackupParams.model_fields["lock_wait_seconds"].description
    )
    with pytest.raises(ValueError):
        RestoreParams(node="x", lock_wait_seconds=-1)
    assert not ClusterChangeParams().require_approval  # the shared default is untouched


def test_the_drill_shares_the_lock_and_slack_fields() -> None:
    from regionops.runbook.drill import DrillParams

    for name in ("lock_wait_seconds", "notify"):
        assert DrillParams.model_fields[name].description == ClusterChangeParams.model_fields[name].description
    assert DrillParams().dry_run is False and "inject nothing" in str(DrillParams.model_fields["dry_run"].description)


def test_a_run_journal_is_read_back_only_by_its_own_run(tmp_path) -> None:
    from types import SimpleNamespace

    from regionops.runbook.journal import RunJournal

    journal = RunJournal(SimpleNamespace(state_dir=str(tmp_path)), "dr-drill", "core")  # type: ignore[arg-type]
    assert journal.read("run-1") == {}
    journal.write({"run": "run-1", "scenario": "primary-crash", "target": "eu-1"})
    assert journal.read("run-1")["target"] == "eu-1"
    assert journal.read("run-2") == {}  # another run's record is not ours to undo
    journal.clear()
    assert journal.read("run-1") == {}
    assert RunJournal(SimpleNamespace(state_dir=None), "dr-drill", "core").read("run-1") == {}  # type: ignore[arg-type]


def test_the_drill_verdict_needs_every_step() -> None:
    from datetime import UTC, datetime

    from regionops.decisions.drill import ConsistencyCheck, DrillMeasurement
    from regionops.runbook.drill import DrillParams, DrillResult, Measured, Recovery, Rollback

    params = DrillParams()
    planned = DrillResult.planned(params, "core", "eu-1", "eu-1", ["a", "b"], "run")
    assert planned.canary_run_id.startswith("run-") and not planned.ok
    consistent = ConsistencyCheck(primary="us-1", nodes=["eu-1"], tables=["public.t"], mismatches=[])
    figures = DrillMeasurement(
        writes_sent=10,
        writes_acknowledged=10,
        injected_at=datetime(2026, 12, 7, tzinfo=UTC),
        first_ack_after_fault_at=None,
        rto_seconds=1.0,
        unavailable_seconds=1.0,
        rpo_rows=0,
        rpo_seconds=0.0,
        lost_seqs=[],
        late_acks=[],
    )
    measured = Measured(new_primary="us-1", measurement=figures, catch_up_seconds=0.5, consistency=consistent)
    steady = Rollback(notes=["ok"], ok=True, steady_after=True, final_consistency=consistent)
    assert planned.with_outcomes(Recovery(ok=True, sentence="done"), measured, steady).ok
    assert planned.with_outcomes(Recovery(ok=True, sentence="done"), measured, None).ok  # no rollback asked for
    assert not planned.with_outcomes(Recovery(ok=False), measured, steady).ok
    assert not planned.with_outcomes(Recovery(ok=True), measured, Rollback(ok=True, steady_after=False)).ok
    result = planned.with_outcomes(Recovery(ok=True, sentence="done"), measured, steady)
    assert result.new_primary == "us-1" and result.rollback == ["ok"] and result.recovery == "done"


def test_a_killed_subflows_journal_is_read_by_its_parent_only_when_written_during_the_parents_run(tmp_path) -> None:
    from datetime import UTC, datetime, timedelta
    from types import SimpleNamespace

    from regionops.runbook.journal import RunJournal

    journal = RunJournal(SimpleNamespace(state_dir=str(tmp_path)), "switchover", "core")  # type: ignore[arg-type]
    before = datetime.now(UTC) - timedelta(seconds=1)
    journal.write({"run": "subflow-1", "old": "us-1", "new": "eu-1", "phase": "stopping"})
    assert journal.read_written_since(before)["phase"] == "stopping"  # the drill's own switchover subflow
    assert journal.read_written_since(datetime.now(UTC) + timedelta(seconds=1)) == {}  # older than the drill: stale
    assert journal.read_written_since(None) == {}
    assert not list(tmp_path.rglob("*.partial"))  # written whole, then renamed
