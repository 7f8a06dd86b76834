"""What a runbook sends to a region's node-step executor and what it gets back (plain, importable models).

They live in their own module, importable by both sides without Prefect's engine: the
reply is pickled by the executor and read back by the runbook.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field, field_validator

from regionops.model import ControlData, WalEnd
from regionops.model.restore import (
    ActivatedRestore,
    ActivateRequest,
    RestoreDiskFacts,
    StagedRestore,
    StageRequest,
)
from regionops.node.operations import OPERATIONS
from regionops.node.operator import NodeOpResult, StopMode
from regionops.node.pgbackrest_step import PgBackRestCommand, PgBackRestRun
from regionops.topology import Topology


class NodeOpParams(BaseModel):
    """One node step: which node of which cluster, what to do, and with which peer."""

    topology: Topology = Field(
        description="the environment's topology (secrets are references, resolved on the worker)"
    )
    cluster: str = Field(description="cluster the node belongs to")
    node: str = Field(description="node to act on; its region's worker must run this")
    operation: str = Field(description="the one step to perform (an entry of regionops.node.operations)")
    mode: StopMode = Field("fast", description="stop mode (stop only)")
    peer: str | None = Field(None, description="primary (configure-standby) or source (rewind, reclone)")
    repo: int = Field(1, ge=1, description="pgBackRest repository whose backup sets to list (restore-facts only)")
    stage: StageRequest | None = Field(None, description="what to restore beside the node (restore-stage only)")
    activate: ActivateRequest | None = Field(None, description="the verified copy to swap in (restore-activate only)")
    pgbackrest: PgBackRestCommand | None = Field(None, description="the pgBackRest command to run (pgbackrest only)")

    @field_validator("operation")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in OPERATIONS:
            raise ValueError(f"unknown node operation {name!r}; known: {', '.join(OPERATIONS)}")
        return name


class NodeOpReply(BaseModel):
    """What one node step returned, typed by the kind of step."""

    node: str
    operation: str
    worker_region: str | None
    standing: str
    result: NodeOpResult | None = None  # a change
    flag: bool | None = None  # data-dir-exists, is-running
    control: ControlData | None = None  # control-data
    wal_end: WalEnd | None = None  # wal-end
    restore_facts: RestoreDiskFacts | None = None  # restore-facts
    staged: StagedRestore | None = None  # restore-stage
    activated: ActivatedRestore | None = None  # restore-activate
    pgbackrest: PgBackRestRun | None = None  # pgbackrest

    def sentence(self) -> str:
        """One line for logs and reports."""
        if self.result is not None:
            return self.result.sentence()
        shown = self.control or self.wal_end or self.restore_facts or self.staged or self.activated or self.pgbackrest
        value = shown.sentence() if shown is not None else self.flag
        return f"{self.operation} of {self.node} on the {self.worker_region} worker: {value}"


def step_key(region: str) -> str:
    """The name of a region's node-step task (its task key's stem): ``node_step_<region>``.

    Here, not in the executor's module, so the lab can name it without importing Prefect.
    """
    return "node_step_" + re.sub(r"\W", "_", region)
