"""The node-operation flow: ONE node step per run, run by the worker of the node's region.

Deployed once per region pool (``node-operation/<region>`` on ``regions.<region>.work_pool``);
:class:`regionops.node.regional.RegionalNodeOperator` starts it with ``run_deployment``
and reads its typed :class:`NodeOpReply` from the persisted result.  Before it acts it
checks where it stands (:mod:`regionops.node.standing`) with the region check always on:
a run picked up by another region's worker refuses, changing nothing.
"""

from __future__ import annotations

import os

from prefect import flow, get_run_logger

from regionops.node.local import LocalNodeOperator
from regionops.node.messages import FLOW_NAME, NodeOpParams, NodeOpReply

REGION_ENV = "REGIONOPS_REGION"
# Operations that act on the node with a second node as the peer (primary or source).
NEEDS_PEER = {"configure-standby", "rewind", "reclone"}


def perform(params: NodeOpParams, worker_region: str | None) -> NodeOpReply:
    """Check where this worker stands, then run the one step (PreconditionFailed when it stands wrong)."""
    op = LocalNodeOperator(params.topology, params.cluster, worker_region=worker_region, check_region=True)
    standing = op.require_standing(params.node).sentence()
    node, name = params.node, params.operation
    reply = NodeOpReply(node=node, operation=name, worker_region=worker_region, standing=standing)
    if name in NEEDS_PEER and not params.peer:
        raise ValueError(f"{name} of {node} needs a peer (the primary or source node)")
    if (name == "restore-stage" and params.stage is None) or (name == "restore-activate" and params.activate is None):
        raise ValueError(f"{name} of {node} needs its request (stage or activate)")
    if name == "pgbackrest" and params.pgbackrest is None:
        raise ValueError(f"pgbackrest on {node} needs the command to run")
    if name == "data-dir-exists":
        reply.flag = op.data_dir_exists(node)
    elif name == "is-running":
        reply.flag = op.is_running(node)
    elif name == "control-data":
        reply.control = op.control_data(node)
    elif name == "wal-end":
        reply.wal_end = op.wal_end(node)
    elif name == "start":
        reply.result = op.start(node)
    elif name == "stop":
        reply.result = op.stop(node, params.mode)
    elif name == "configure-standby":
        reply.result = op.configure_standby(node, params.peer)
    elif name == "block-primary-start":
        reply.result = op.block_primary_start(node)
    elif name == "rewind":
        reply.result = op.rewind(node, params.peer)
    elif name == "reclone":
        reply.result = op.reclone(node, params.peer)
    elif name == "remove-replaced":
        reply.result = op.remove_replaced(node)
    elif name == "restore-facts":
        reply.restore_facts = op.restore_facts(node, params.repo)
    elif name == "restore-stage":
        reply.staged = op.restore_stage(node, params.stage)
    elif name == "restore-activate":
        reply.activated = op.restore_activate(node, params.activate)
    elif name == "pgbackrest":
        reply.pgbackrest = op.pgbackrest(node, params.pgbackrest)
    else:  # pragma: no cover - the Literal type admits nothing else
        raise ValueError(f"unknown node operation {name!r}")
    return reply


# Persisted, so the runbook that started this run can read the typed reply: every
# worker and every caller must reach the same result storage (the lab: a directory
# under .lab; production: PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK naming e.g. an S3 bucket block).
@flow(name=FLOW_NAME, persist_result=True, retries=0, validate_parameters=True)
def node_operation(params: NodeOpParams) -> NodeOpReply:
    """Run one node step on this (the node's regional) worker, after checking where it stands."""
    logger = get_run_logger()
    reply = perform(params, os.environ.get(REGION_ENV) or None)
    logger.info("%s (%s)", reply.sentence(), reply.standing)
    return reply
