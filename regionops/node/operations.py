"""The one table of node operations: what each is called, what it takes, what it returns.

Every node step is one entry of :data:`OPERATIONS`.  The rest is derived from it:
the regional operator ships a step by its entry (:mod:`regionops.node.regional`), the
region's executor dispatches on it (:mod:`regionops.node.executor`), the Prefect tasks
are built from it (:mod:`tasks.nodeops`), and a unit test holds the
:class:`~regionops.node.operator.NodeOperator` protocol and the local implementation
to it.  Adding an operation is one entry here plus its local implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from regionops.model import ControlData, WalEnd
from regionops.model.restore import (
    ActivatedRestore,
    ActivateRequest,
    RestoreDiskFacts,
    StagedRestore,
    StageRequest,
)
from regionops.node.operator import NodeOpResult, StopMode
from regionops.node.pgbackrest_step import PgBackRestCommand, PgBackRestRun


@dataclass(frozen=True)
class Argument:
    """One argument of a step beyond the node: its name in the operator's method and where it travels."""

    name: str  # the parameter name of the operator's method (and of the task)
    field: str  # the NodeOpParams field that carries it to the node's worker
    type: Any
    default: Any = None  # None: required

    @property
    def required(self) -> bool:
        return self.default is None


@dataclass(frozen=True)
class NodeOperation:
    """One node step: the operator's method, its arguments, its typed result and where the reply carries it."""

    name: str  # on the wire (NodeOpParams.operation) and in run names
    method: str  # the NodeOperator method
    returns: Any  # the result's type (a read may return None: ``optional``)
    reply: str  # the NodeOpReply field that carries the result back
    description: str
    arguments: tuple[Argument, ...] = ()
    optional: bool = False  # the result may be None (nothing to read)
    task: str | None = None  # the Prefect task's name, when tasks.nodeops offers one
    retried: bool = False  # reads retry transient failures; changes never do

    def shipped(self, args: tuple[Any, ...]) -> dict[str, Any]:
        """The NodeOpParams fields that carry ``args`` (in the method's order) to the node's worker."""
        if len(args) > len(self.arguments):
            raise TypeError(f"{self.name} takes {len(self.arguments)} argument(s) beyond the node, not {len(args)}")
        return {a.field: v for a, v in zip(self.arguments, args, strict=False)}

    def received(self, node: str, params: Any) -> tuple[Any, ...]:
        """The method's arguments from a NodeOpParams (ValueError naming any required one that is missing)."""
        missing = [a.name for a in self.arguments if a.required and getattr(params, a.field) is None]
        if missing:
            raise ValueError(f"{self.name} of {node} needs {', '.join(missing)}")
        return tuple(getattr(params, a.field) for a in self.arguments)


def operation(name: str) -> NodeOperation:
    """The entry of ``name`` (ValueError naming the known ones otherwise)."""
    try:
        return OPERATIONS[name]
    except KeyError:
        raise ValueError(f"unknown node operation {name!r}; known: {', '.join(OPERATIONS)}") from None


_PEER_PRIMARY = Argument("primary", "peer", str)
_PEER_SOURCE = Argument("source", "peer", str)

OPERATIONS: dict[str, NodeOperation] = {
    op.name: op
    for op in (
        # -- reads: never change anything ----------------------------------------------------
        NodeOperation(
            "data-dir-exists",
            "data_dir_exists",
            bool,
            "flag",
            "Whether the node's data directory holds a cluster (PG_VERSION present).",
            task="data directory exists",
            retried=True,
        ),
        NodeOperation(
            "is-running",
            "is_running",
            bool,
            "flag",
            "Whether a postmaster runs on the node's data directory.",
            task="node is running",
            retried=True,
        ),
        NodeOperation(
            "control-data",
            "control_data",
            ControlData,
            "control",
            "The node's pg_control (role, timeline, checkpoint) even while it is down; None without a data directory.",
            optional=True,
            task="read control data",
            retried=True,
        ),
        NodeOperation(
            "wal-end",
            "wal_end",
            WalEnd,
            "wal_end",
            "Where the (stopped) node's WAL on disk ends.",
            optional=True,
            task="read WAL end",
            retried=True,
        ),
        NodeOperation(
            "is-frozen",
            "is_frozen",
            bool,
            "flag",
            "Whether the node's postmaster is stopped by a signal (a freeze): it cannot honour any pg_ctl request.",
        ),
        NodeOperation(
            "primary-start-blocked",
            "primary_start_blocked",
            bool,
            "flag",
            "Whether the node is fenced on disk (standby.signal): it can only start read-only.",
        ),
        # -- changes: each returns a NodeOpResult that reads as a sentence -------------------
        NodeOperation(
            "start",
            "start",
            NodeOpResult,
            "result",
            "Start PostgreSQL on the node and wait until it accepts connections.",
            task="start node",
        ),
        NodeOperation(
            "stop",
            "stop",
            NodeOpResult,
            "result",
            "Stop PostgreSQL on the node (no change when it is not running).",
            arguments=(Argument("mode", "mode", StopMode, "fast"),),
            task="stop node",
        ),
        NodeOperation(
            "configure-standby",
            "configure_standby",
            NodeOpResult,
            "result",
            "Make the stopped node start as a streaming replica of ``primary`` with its own slot.",
            arguments=(_PEER_PRIMARY,),
            task="configure standby",
        ),
        NodeOperation(
            "block-primary-start",
            "block_primary_start",
            NodeOpResult,
            "result",
            "Fence on disk: the node can only ever start read-only, never as a primary.",
            task="block primary start",
        ),
        NodeOperation(
            "fence-on-host",
            "fence_on_host",
            NodeOpResult,
            "result",
            "Stop the node at once if it runs (a hung one is killed) and fence it on disk (standby.signal): one "
            "step, so a failover pays one round trip to the old primary's host before it promotes.",
            task="stop and fence on disk",
        ),
        NodeOperation(
            "allow-primary-start",
            "allow_primary_start",
            NodeOpResult,
            "result",
            "Lift the fence on disk (remove standby.signal): the node may start as a primary again.",
        ),
        NodeOperation(
            "rewind",
            "rewind",
            NodeOpResult,
            "result",
            "pg_rewind the stopped node from ``source`` and configure it as its replica.",
            arguments=(_PEER_SOURCE,),
            task="rewind node",
        ),
        NodeOperation(
            "reclone",
            "reclone",
            NodeOpResult,
            "result",
            "pg_basebackup the node afresh from ``source`` into a new directory; swap only when it worked.",
            arguments=(_PEER_SOURCE,),
            task="re-clone node",
        ),
        NodeOperation(
            "remove-replaced",
            "remove_replaced",
            NodeOpResult,
            "result",
            "Delete the data directories a verified reclone set aside.",
            task="remove replaced data directory",
        ),
        # -- restore's disk steps (tasks.restore wraps them) ----------------------------------
        NodeOperation(
            "restore-facts",
            "restore_facts",
            RestoreDiskFacts,
            "restore_facts",
            "What a restore's plan needs from the node's host: free space, running, holds data, the repo's sets.",
            arguments=(Argument("repo", "repo", int, 1),),
        ),
        NodeOperation(
            "restore-stage",
            "restore_stage",
            StagedRestore,
            "staged",
            "pgbackrest restore into an empty directory beside the node's data and prove it (the data is untouched).",
            arguments=(Argument("request", "stage", StageRequest),),
        ),
        NodeOperation(
            "restore-activate",
            "restore_activate",
            ActivatedRestore,
            "activated",
            "Swap the verified copy in, give the node its role and start it; swap back on failure.",
            arguments=(Argument("request", "activate", ActivateRequest),),
        ),
        # -- one pgBackRest command with the node's own configuration --------------------------
        NodeOperation(
            "pgbackrest",
            "pgbackrest",
            PgBackRestRun,
            "pgbackrest",
            "Run one pgBackRest command on the node's machine as the cluster's OS user (exit code, output).",
            arguments=(Argument("command", "pgbackrest", PgBackRestCommand),),
        ),
    )
}
