"""Node-local tasks: one per operation of the node-operation seam, built from its table.

Each task calls :meth:`regionops.node.NodeOperator.perform` with its entry of
:data:`regionops.node.operations.OPERATIONS` (its name, description, arguments and
result come from there).  These change a node's machine, so none retries on its own:
a half-done rewind or clone is looked at by the next observation, not repeated blindly.
Reads retry when the failure is transient.
"""

from __future__ import annotations

import inspect
from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE

from regionops.model import ControlData, WalEnd
from regionops.node import NodeOpResult, node_operator_for
from regionops.node.operations import operation
from regionops.topology import Topology
from tasks.common import TRANSIENT_RETRIES


def node_task(name: str, python_name: str) -> Task[..., Any]:
    """The Prefect task of the node operation ``name``: ``(topology, cluster, node, *its arguments)``."""
    step = operation(name)
    if step.task is None:
        raise ValueError(f"node operation {name} has no task (its entry names none)")

    # What Prefect shows and binds: the operation's own parameters, name and description.
    fixed = [
        inspect.Parameter("topology", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Topology),
        inspect.Parameter("cluster", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str),
        inspect.Parameter("node", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str),
    ]
    extra = [
        inspect.Parameter(
            a.name,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=a.type,
            default=inspect.Parameter.empty if a.required else a.default,
        )
        for a in step.arguments
    ]
    returns = step.returns | None if step.optional else step.returns
    signature = inspect.Signature(fixed + extra, return_annotation=returns)

    def run(topology: Topology, cluster: str, node: str, *args: Any, **kwargs: Any) -> Any:
        # The signature binds the call (TypeError naming a missing argument) and fills the defaults.
        bound = signature.bind(topology, cluster, node, *args, **kwargs)
        bound.apply_defaults()
        values = [bound.arguments[a.name] for a in step.arguments]
        return node_operator_for(topology, cluster).perform(step.name, node, *values)

    run.__signature__ = signature  # type: ignore[attr-defined]
    run.__name__ = run.__qualname__ = python_name  # distinct task keys, readable tracebacks
    run.__doc__ = step.description
    run.__module__ = __name__
    policy = TRANSIENT_RETRIES if step.retried else {}
    return task(name=step.task, cache_policy=NO_CACHE, **policy)(run)


# Typed for the flows that call them (the table's types, repeated where a checker can see them).
data_dir_exists: Task[..., bool] = node_task("data-dir-exists", "data_dir_exists")
node_running: Task[..., bool] = node_task("is-running", "node_running")
read_control_data: Task[..., ControlData | None] = node_task("control-data", "read_control_data")
read_wal_end: Task[..., WalEnd | None] = node_task("wal-end", "read_wal_end")
start_node: Task[..., NodeOpResult] = node_task("start", "start_node")
stop_node: Task[..., NodeOpResult] = node_task("stop", "stop_node")
configure_standby: Task[..., NodeOpResult] = node_task("configure-standby", "configure_standby")
block_primary_start: Task[..., NodeOpResult] = node_task("block-primary-start", "block_primary_start")
fence_on_host: Task[..., NodeOpResult] = node_task("fence-on-host", "fence_on_host")
rewind_node: Task[..., NodeOpResult] = node_task("rewind", "rewind_node")
reclone_node: Task[..., NodeOpResult] = node_task("reclone", "reclone_node")
remove_replaced: Task[..., NodeOpResult] = node_task("remove-replaced", "remove_replaced")
