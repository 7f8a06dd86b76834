"""The node-operation seam's contract: the :class:`NodeOperator` protocol and its typed results.

ARCHITECTURE.md section 7: cluster-level steps (SQL, DNS) can run anywhere, but
starting, stopping, rewinding or re-cloning a node needs its disk, so those steps go
through a :class:`NodeOperator`.  Operations take node *names*, never connection
objects, so a remote operator can ship them as plain parameters; each change returns a
:class:`NodeOpResult` that reads as a sentence.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

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
# A node operation's name: an entry of regionops.node.operations.OPERATIONS.
Operation = str

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
    """Node-local steps of the runbooks.  Reads never change anything; every change returns a result.

    Each step is an entry of :data:`regionops.node.operations.OPERATIONS`; the typed
    methods below are the callers' view of those entries and all go through
    :meth:`perform`.  The local operator implements each step; the regional one only
    :meth:`perform` (it ships the step to the node's worker) and inherits these.
    """

    def perform(self, operation: str, node: str, *args: Any) -> Any:
        """Run the step named ``operation`` (an OPERATIONS entry) on ``node`` with its arguments."""
        ...

    def data_dir_exists(self, node: str) -> bool:
        """Whether the node's data directory holds a cluster (PG_VERSION present)."""
        return bool(self.perform("data-dir-exists", node))

    def is_running(self, node: str) -> bool:
        """Whether a postmaster runs on the node's data directory."""
        return bool(self.perform("is-running", node))

    def control_data(self, node: str) -> ControlData | None:
        """The node's control file, or None without a data directory."""
        return self.perform("control-data", node)

    def wal_end(self, node: str) -> WalEnd | None:
        """Where the node's WAL on disk ends (meaningful while it is stopped)."""
        return self.perform("wal-end", node)

    def is_frozen(self, node: str) -> bool:
        """Whether the node's postmaster is stopped by a signal (a freeze fault)."""
        return bool(self.perform("is-frozen", node))

    def primary_start_blocked(self, node: str) -> bool:
        """Whether the node is fenced on disk (standby.signal): it can only start read-only."""
        return bool(self.perform("primary-start-blocked", node))

    def start(self, node: str) -> NodeOpResult:
        """Start the server and wait until it accepts connections."""
        return self.perform("start", node)

    def stop(self, node: str, mode: StopMode = "fast") -> NodeOpResult:
        """Stop the server (no change when it is not running)."""
        return self.perform("stop", node, mode)

    def configure_standby(self, node: str, primary: str) -> NodeOpResult:
        """Make the (stopped) node start as a streaming replica of ``primary`` with its own slot."""
        return self.perform("configure-standby", node, primary)

    def block_primary_start(self, node: str) -> NodeOpResult:
        """Fence on disk: the node can only start in recovery (read-only), never as a primary."""
        return self.perform("block-primary-start", node)

    def fence_on_host(self, node: str) -> NodeOpResult:
        """Stop the node immediately if it runs and write standby.signal, in one step (PreconditionFailed: no data)."""
        return self.perform("fence-on-host", node)

    def allow_primary_start(self, node: str) -> NodeOpResult:
        """Lift the fence on disk (remove standby.signal): the node may start as a primary again."""
        return self.perform("allow-primary-start", node)

    def rewind(self, node: str, source: str) -> NodeOpResult:
        """pg_rewind the stopped node from ``source`` and configure it as a replica of it."""
        return self.perform("rewind", node, source)

    def reclone(self, node: str, source: str) -> NodeOpResult:
        """pg_basebackup from ``source`` into a new directory beside the old; swap only when it worked."""
        return self.perform("reclone", node, source)

    def remove_replaced(self, node: str) -> NodeOpResult:
        """Delete data directories a reclone set aside."""
        return self.perform("remove-replaced", node)

    def restore_facts(self, node: str, repo: int = 1) -> RestoreDiskFacts:
        """What a restore's plan needs from the node's host: free space, running, holds data, repo's backup sets."""
        return self.perform("restore-facts", node, repo)

    def restore_stage(self, node: str, request: StageRequest) -> StagedRestore:
        """pgbackrest restore into an empty directory beside the node's data and prove it (the data is untouched)."""
        return self.perform("restore-stage", node, request)

    def restore_activate(self, node: str, request: ActivateRequest) -> ActivatedRestore:
        """Swap the verified copy in, give the node its role and start it; swap back on failure."""
        return self.perform("restore-activate", node, request)

    def pgbackrest(self, node: str, command: PgBackRestCommand) -> PgBackRestRun:
        """Run one pgBackRest command on the node's machine as the cluster's OS user (exit code, output)."""
        return self.perform("pgbackrest", node, command)
