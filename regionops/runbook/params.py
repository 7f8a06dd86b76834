"""The parameters every runbook that changes a cluster shares (rendered as a form in the Prefect UI).

A runbook's own model subclasses :class:`ClusterChangeParams` and adds its fields; a
runbook whose default differs (restore asks for approval by default) redefines that
one field.  Keeping the block here keeps its descriptions and its blank-is-none rule
the same everywhere.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator


class RunbookParams(BaseModel):
    """Where a runbook acts: the topology file and the cluster."""

    topology: str | None = Field(None, description="Topology file; default $REGIONOPS_TOPOLOGY, else the lab's")
    cluster: str | None = Field(None, description="Cluster to act on; default the topology's only cluster")

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any, info: ValidationInfo) -> Any:
        # An alert template renders a missing label as "", and a cleared UI field is "":
        # for an optional field (default None) that means "not given".
        field = cls.model_fields.get(info.field_name or "")
        if value == "" and field is not None and field.default is None and not field.is_required():
            return None
        return value


class ClusterChangeParams(RunbookParams):
    """Parameters shared by every runbook that changes a cluster."""

    dry_run: bool = Field(False, description="Plan and check everything, show the plan; change nothing")
    require_approval: bool = Field(
        False, description="Pause for a typed approval in the UI (approver, reason, confirmation phrase) "
                           "before the first change")
    approval_timeout_seconds: int = Field(1800, gt=0, description="How long to wait for the approval")
    lock_wait_seconds: float = Field(
        0, ge=0, description="How long to wait for another runbook to release the cluster before refusing")
    notify: bool = Field(True, description="Report the run in a Slack thread")
