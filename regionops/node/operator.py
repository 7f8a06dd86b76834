"""The node-operation seam's contract: the :class:`NodeOperator` protocol and its typed results.

ARCHITECTURE.md section 7: cluster-level steps (SQL, DNS) can run anywhere, but
starting, stopping, rewinding or re-cloning a node needs its disk, so those steps go
through a :class:`NodeOperator`.  Operations take node *names*, never connection
objects, so a remote operator can ship them as plain parameters; each change returns a
:class:`NodeOpResult` that reads as a sentence.
"""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import BaseModel

from regionops.model import ControlData, WalEnd
from regionops.model.restore import (
    ActivatedRestore,
    ActivateRequest,
    RestoreDiskFacts,
    StagedRestore,
    StageRequest,
)
from regionops.node.pgbackrest_step import PgBackRestCommand, PgBackRestRun

StopMode = Literal["smart", "fast", "immediate"]
Operation = Literal["start", "stop", "configure-standby", "block-primary-start", "rewind", "reclone", "remove-replaced"]
ReadOperation = Literal["data-dir-exists", "is-running", "control-data", "wal-end"]
# Restore's disk steps: read what the plan needs, restore beside the data and prove it, swap in.
RestoreOperation = Literal["restore-facts", "restore-stage", "restore-activate"]
# One pgBackRest command with the node's own configuration (backup, check, info, verify, expire).
PgBackRestOperation = Literal["pgbackrest"]

# Suffix of a data directory set aside by a reclone (kept until the new one is verified).
REPLACED_MARK = ".replaced-"
RECLONE_MARK = ".reclone-"


class NodeOpResult(BaseModel):
    """One node-local step: what was done to which node, whether anything changed, how long it took."""

    node: str
    operation: Operation
    changed: bool
    detail: str
    seconds: float = 0.0

    def sentence(self) -> str:
        """One line for logs and reports."""
        return self.detail


class NodeOperator(Protocol):
    """Node-local steps of the runbooks.  Reads never change anything; every change returns a result."""

    def data_dir_exists(self, node: str) -> bool:
        """Whether the node's data directory holds a cluster (PG_VERSION present)."""
        ...

    def is_running(self, node: str) -> bool:
        """Whether a postmaster runs on the node's data directory."""
        ...

    def control_data(self, node: str) -> ControlData | None:
        """The node's control file, or None without a data directory."""
        ...

    def wal_end(self, node: str) -> WalEnd | None:
        """Where the node's WAL on disk ends (meaningful while it is stopped)."""
        ...

    def start(self, node: str) -> NodeOpResult:
        """Start the server and wait until it accepts connections."""
        ...

    def stop(self, node: str, mode: StopMode = "fast") -> NodeOpResult:
        """Stop the server (no change when it is not running)."""
        ...

    def configure_standby(self, node: str, primary: str) -> NodeOpResult:
        """Make the (stopped) node start as a streaming replica of ``primary`` with its own slot."""
        ...

    def block_primary_start(self, node: str) -> NodeOpResult:
        """Fence on disk: the node can only start in recovery (read-only), never as a primary."""
        ...

    def rewind(self, node: str, source: str) -> NodeOpResult:
        """pg_rewind the stopped node from ``source`` and configure it as a replica of it."""
        ...

    def reclone(self, node: str, source: str) -> NodeOpResult:
        """pg_basebackup from ``source`` into a new directory beside the old; swap only when it worked."""
        ...

    def remove_replaced(self, node: str) -> NodeOpResult:
        """Delete data directories a reclone set aside."""
        ...

    def restore_facts(self, node: str, repo: int = 1) -> RestoreDiskFacts:
        """What a restore's plan needs from the node's host: free space, running, holds data, repo's backup sets."""
        ...

    def restore_stage(self, node: str, request: StageRequest) -> StagedRestore:
        """pgbackrest restore into an empty directory beside the node's data and prove it (the data is untouched)."""
        ...

    def restore_activate(self, node: str, request: ActivateRequest) -> ActivatedRestore:
        """Swap the verified copy in, give the node its role and start it; swap back on failure."""
        ...

    def pgbackrest(self, node: str, command: PgBackRestCommand) -> PgBackRestRun:
        """Run one pgBackRest command on the node's machine as the cluster's OS user (exit code, output)."""
        ...
