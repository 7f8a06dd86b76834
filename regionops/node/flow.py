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
from regionops.node.operations import operation

REGION_ENV = "REGIONOPS_REGION"


def perform(params: NodeOpParams, worker_region: str | None) -> NodeOpReply:
    """Check where this worker stands, then run the one step (PreconditionFailed when it stands wrong)."""
    op = LocalNodeOperator(params.topology, params.cluster, worker_region=worker_region, check_region=True)
    standing = op.require_standing(params.node).sentence()
    node, step = params.node, operation(params.operation)
    reply = NodeOpReply(node=node, operation=step.name, worker_region=worker_region, standing=standing)
    setattr(reply, step.reply, op.perform(step.name, node, *step.received(node, params)))
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
