"""What a restore onto a node plans, sends to the node's host and gets back: plain models, no drivers.

The node-operation seam ships these between the restore runbook and the worker of the
node's region (:mod:`regionops.node.messages`), so they must load without PostgreSQL,
S3 or Prefect clients.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from regionops.backup.manifest import BackupManifest, human_bytes

Role = Literal["replica", "primary"]


class Phase(BaseModel):
    """One timed step of a restore."""

    phase: str
    seconds: float
    detail: str

    def sentence(self) -> str:
        """'download + unpack: 3 objects, 12.0 MiB (2.1 s)'."""
        return f"{self.phase}: {self.detail} ({self.seconds:.1f} s)"


class TableCheck(BaseModel):
    """One fingerprinted table: what the manifest says and what the restored instance has."""

    table: str
    expected_rows: int
    expected_checksum: str
    restored_rows: int
    restored_checksum: str

    @property
    def matches(self) -> bool:
        """Rows and checksum both equal."""
        return (self.expected_rows, self.expected_checksum) == (self.restored_rows, self.restored_checksum)


class RestorePlan(BaseModel):
    """What a restore onto a node will do, decided before anything changes."""

    cluster: str
    node: str
    backup_id: str
    bucket: str
    role: Role
    primary: str | None
    data_dir: str
    staging_dir: str
    old_dir: str
    node_running: bool
    node_has_data: bool
    needed_bytes: int
    free_bytes: int

    def sentence(self) -> str:
        """One line for the report and the approval form."""
        keep = f"keeping the old directory as {self.old_dir} until the node runs" if self.node_has_data \
            else "no old data to keep"
        upstream = f", streaming from {self.primary}" if self.role == "replica" else ""
        return (
            f"restore backup {self.backup_id} onto {self.node} as {self.role}{upstream}: unpack into "
            f"{self.staging_dir}, verify, then swap into {self.data_dir} ({keep}); "
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

    def sentence(self) -> str:
        """One line for logs."""
        state = "running" if self.running else "not running"
        data = "holds data" if self.has_data else "is empty or missing"
        return f"{self.node}: {self.data_dir} {data}, {state}, {human_bytes(self.free_bytes)} free beside it"


class StageRequest(BaseModel):
    """Restore a backup beside the node's data directory and prove it (the node's host does this)."""

    plan: RestorePlan
    manifest: BackupManifest
    start_timeout_seconds: int = 600
    recovery_timeout_seconds: float = 1800


class StagedRestore(BaseModel):
    """The verified staging copy: its phases, the fingerprint check, and the backup's own pg_hba.conf."""

    node: str
    staging_dir: str
    phases: list[Phase]
    tables: list[TableCheck] = []
    original_hba: str | None = None
    promoted: bool = False

    def sentence(self) -> str:
        """One line for logs."""
        rows = ", ".join(f"{t.table} {t.restored_rows} rows" for t in self.tables) or "no fingerprint"
        return f"restored and verified backup into {self.staging_dir} beside {self.node}'s data ({rows})"


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
