"""The parameters every runbook that changes a cluster shares (rendered as a form in the Prefect UI).

A runbook's own model subclasses :class:`ClusterChangeParams` and adds its fields; a
runbook whose default differs (restore asks for approval by default) says only that,
``require_approval: bool = ClusterChangeParams.default("require_approval", True)``:
the field keeps its description and bounds from here.  Keeping the block here keeps
its descriptions and its blank-is-none rule the same everywhere.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator
from pydantic.fields import FieldInfo

from regionops.model.restore import RequestedTarget


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

    @classmethod
    def default(cls, name: str, value: Any, **changes: Any) -> Any:
        """Field ``name`` as declared here with another default (``changes``: e.g. a runbook's own description).

        For a runbook's model: ``lock_wait_seconds: float = ClusterChangeParams.default("lock_wait_seconds", 30)``.
        """
        return FieldInfo.merge_field_infos(cls.model_fields[name], default=value, **changes)


class ClusterChangeParams(RunbookParams):
    """Parameters shared by every runbook that changes a cluster."""

    dry_run: bool = Field(False, description="Plan and check everything, show the plan; change nothing")
    require_approval: bool = Field(
        False,
        description="Pause for a typed approval in the UI (approver, reason, confirmation phrase) "
        "before the first change",
    )
    approval_timeout_seconds: int = Field(1800, gt=0, description="How long to wait for the approval")
    lock_wait_seconds: float = Field(
        0, ge=0, description="How long to wait for another runbook to release the cluster before refusing"
    )
    notify: bool = Field(True, description="Report the run in a Slack thread")


class RestoreTargetParams(BaseModel):
    """Which backup set to restore and where recovery stops (restore and restore-verify share them)."""

    label: str | None = Field(
        None,
        description="pgBackRest backup set (e.g. 20261124-140400F); default the newest in "
        "the repository (for a time or LSN target: the newest that ended "
        "before it)",
    )
    region: str | None = Field(None, description="Region whose repository to restore from; default the home one")
    target_type: RequestedTarget = Field(
        "proof",
        description="Where recovery stops: proof (the set's proof restore point, where the data is compared "
        "with its fingerprint; without one the end of the archive), time, lsn, name (with "
        "`target`), immediate (the backup's end) or default (the end of the WAL archive; a "
        "restored replica stops at the backup's end instead, then streams the rest)",
    )
    target: str | None = Field(
        None,
        description="The time ('2026-11-24 14:04:00+00'), LSN ('0/5000060') or restore "
        "point name, for target_type time, lsn or name",
    )
