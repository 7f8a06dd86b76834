"""What a restore plans, sends to the node's host and gets back: plain models, no drivers.

The node-operation seam ships these between the restore runbook and the worker of the
node's region (:mod:`regionops.node.messages`), so they must load without PostgreSQL,
S3 or Prefect clients.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from regionops.units import human_bytes

Role = Literal["replica", "primary"]
# What the runbooks accept: "proof" = the backup set's proof restore point (else the end of the archive).
RequestedTarget = Literal["proof", "time", "lsn", "name", "immediate", "default"]
# What pgBackRest is given (its --type).
TargetType = Literal["time", "lsn", "name", "immediate", "default"]


class Phase(BaseModel):
    """One timed step of a restore."""

    phase: str
    seconds: float
    detail: str

    def sentence(self) -> str:
        """'restore: backup 20261124-140400F from repo1 (2.1 s)'."""
        return f"{self.phase}: {self.detail} ({self.seconds:.1f} s)"


class Fingerprint(BaseModel):
    """Row count and checksum a table must show (a proof record's, shipped without its driver)."""

    rows: int
    checksum: str


class TableCheck(BaseModel):
    """One fingerprint table in the restored instance, and what the proof says when there is one."""

    table: str
    restored_rows: int
    restored_checksum: str
    expected_rows: int | None = None
    expected_checksum: str | None = None

    @property
    def compared(self) -> bool:
        """The proof's fingerprint applies (recovery stopped at its restore point)."""
        return self.expected_rows is not None

    @property
    def matches(self) -> bool:
        """Rows and checksum both equal the proof's (True when nothing was to compare)."""
        if not self.compared:
            return True
        return (self.expected_rows, self.expected_checksum) == (self.restored_rows, self.restored_checksum)


class BackupSet(BaseModel):
    """One good backup set as ``pgbackrest info`` lists it (the plan's view, without the driver)."""

    label: str
    type: str
    repo: int
    stopped: datetime
    lsn_stop: str | None = None
    size: int = Field(0, description="database size in bytes")

    def sentence(self) -> str:
        """'full backup 20261124-140400F in repo1, ended 2026-11-24 14:04:05Z'."""
        return f"{self.type} backup {self.label} in repo{self.repo}, ended {self.stopped:%Y-%m-%d %H:%M:%S}Z"


class RestoreTarget(BaseModel):
    """Which backup set, from which repository, and where recovery stops: decided before anything runs."""

    cluster: str
    label: str = Field(description="pgBackRest's backup set label")
    repo: int
    set_stopped: str = Field(description="when the set's backup ended (UTC), for the report")
    type: TargetType
    target: str | None = None
    proof_point: bool = Field(False, description="the target is the set's proof restore point")
    expected: dict[str, Fingerprint] = Field(default_factory=dict, description="the proof's fingerprint")
    tables: list[str] = Field(default_factory=list, description="tables to count in the restored instance")

    def describe(self) -> str:
        """'restore point regionops-core-… (the proof of 20261124-140400F)', 'time 2026-…', 'the end of the archive'."""
        if self.proof_point:
            return f"restore point {self.target} (the proof of {self.label})"
        if self.type == "immediate":
            return f"the end of backup {self.label}"
        if self.type == "default":
            return "the end of the WAL archive"
        return f"{self.type} {self.target}"

    def sentence(self) -> str:
        """One line for the plan."""
        return f"backup {self.label} (ended {self.set_stopped}) from repo{self.repo}, recovering to {self.describe()}"


class RestorePlan(BaseModel):
    """What a restore onto a node will do, decided before anything changes."""

    cluster: str
    node: str
    target: RestoreTarget
    role: Role
    primary: str | None
    data_dir: str
    staging_dir: str
    old_dir: str
    node_running: bool
    node_has_data: bool
    needed_bytes: int
    free_bytes: int

    @property
    def label(self) -> str:
        """The backup set restored."""
        return self.target.label

    def sentence(self) -> str:
        """One line for the report and the approval form."""
        keep = (
            f"keeping the old directory as {self.old_dir} until the node runs"
            if self.node_has_data
            else "no old data to keep"
        )
        upstream = f", then streaming from {self.primary}" if self.role == "replica" else ""
        return (
            f"restore {self.target.sentence()} onto {self.node} as {self.role}{upstream}: pgbackrest restore "
            f"into the empty {self.staging_dir}, verify, then swap into {self.data_dir} ({keep}); "
            f"needs about {human_bytes(self.needed_bytes)}, {human_bytes(self.free_bytes)} free"
        )


class Activation(BaseModel):
    """The swap: the verified directory became the node's, the old one moved aside."""

    node: str
    data_dir: str
    old_dir: str | None
    stopped_old: bool
    seconds: float

    def sentence(self) -> str:
        """One line for the report."""
        old = f"old data kept at {self.old_dir}" if self.old_dir else "there was no old data"
        stopped = "stopped the old server, " if self.stopped_old else ""
        return f"{stopped}swapped the verified data into {self.data_dir} for {self.node}; {old}"


class RestoreDiskFacts(BaseModel):
    """What restore's plan needs from the node's own disk, read on the node's host."""

    node: str
    data_dir: str
    free_bytes: int = Field(description="free bytes beside the data directory (where the staging copy goes)")
    running: bool = Field(description="a postmaster runs on the data directory")
    has_data: bool = Field(description="the data directory exists and is not empty")
    sets: list[BackupSet] = Field(default_factory=list, description="backup sets of the repository, oldest first")

    def sentence(self) -> str:
        """One line for logs."""
        state = "running" if self.running else "not running"
        data = "holds data" if self.has_data else "is empty or missing"
        return f"{self.node}: {self.data_dir} {data}, {state}, {human_bytes(self.free_bytes)} free beside it"


class StageRequest(BaseModel):
    """Restore a backup set beside the node's data directory and prove it (the node's host does this)."""

    plan: RestorePlan
    start_timeout_seconds: int = 600
    recovery_timeout_seconds: float = 1800


class StagedRestore(BaseModel):
    """The verified staging copy: its phases, the data check, and the backup's own pg_hba.conf."""

    node: str
    staging_dir: str
    phases: list[Phase]
    tables: list[TableCheck] = []
    original_hba: str | None = None
    promoted: bool = False

    def sentence(self) -> str:
        """One line for logs."""
        rows = ", ".join(f"{t.table} {t.restored_rows} rows" for t in self.tables) or "no fingerprint tables"
        return f"restored and verified into {self.staging_dir} beside {self.node}'s data ({rows})"


class ActivateRequest(BaseModel):
    """Swap the verified copy in, give the node its role, start it; swap back on failure."""

    plan: RestorePlan
    original_hba: str | None = None
    start_timeout_seconds: int = 600
    keep_old: bool = False


class ActivatedRestore(BaseModel):
    """The node runs from the restored data."""

    activation: Activation
    phases: list[Phase]
    cleanup: str

    def sentence(self) -> str:
        """One line for logs."""
        return f"{self.activation.sentence()}; {self.cleanup}"
