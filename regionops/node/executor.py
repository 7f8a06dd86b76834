"""The regional node-step executor: one long-lived process per region that runs node steps.

A node step (stop a server, fence its data directory, read its WAL end) must run on the
node's own host.  Each region runs one executor on its hosts (``regionops executor
--region eu``; in the lab ``regionops lab up`` starts one per region, in production a
systemd unit from ``deployments/``).  It serves the region's node-step task over the
Prefect API's websocket (a Prefect *task worker*), so a step costs a websocket message
and a thread, not a new Python process: well under a second instead of ~5 s.

What the seam guarantees, and how:

- **Only on its region's host.**  Every region has its own task key
  (``node_step_<region>``), so only that region's executors receive its steps; and
  each step still checks where it stands (:mod:`regionops.node.standing`, region
  check on) before it acts, refusing and changing nothing otherwise.
- **Typed result.**  The reply is a :class:`NodeOpReply`, persisted; the runbook reads it.
- **Never run twice, never after its caller gave up.**  An executor *claims* a step
  before running it by moving its task run from Scheduled to Pending through the
  server's orchestration, which refuses a second move to Pending
  (``PreventPendingTransitions``).  A caller that stops waiting for a pickup makes the
  same claim first and cancels only when it won, so a step is run by one executor or
  cancelled, never both.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any
from uuid import UUID

from prefect import Flow, Task
from prefect.client.orchestration import PrefectClient, SyncPrefectClient
from prefect.client.schemas.objects import State, TaskRun
from prefect.client.schemas.responses import OrchestrationResult, SetStateStatus
from prefect.context import TaskRunContext
from prefect.exceptions import PrefectHTTPStatusError
from prefect.states import Pending
from prefect.task_worker import TaskWorker

from regionops.node.local import LocalNodeOperator
from regionops.node.messages import NodeOpParams, NodeOpReply, step_key
from regionops.node.operations import operation

log = logging.getLogger(__name__)

REGION_ENV = "REGIONOPS_REGION"


def perform(params: NodeOpParams, worker_region: str | None) -> NodeOpReply:
    """Check where this executor stands, then run the one step (PreconditionFailed when it stands wrong)."""
    op = LocalNodeOperator(params.topology, params.cluster, worker_region=worker_region, check_region=True)
    standing = op.require_standing(params.node).sentence()
    node, step = params.node, operation(params.operation)
    reply = NodeOpReply(node=node, operation=step.name, worker_region=worker_region, standing=standing)
    setattr(reply, step.reply, op.perform(step.name, node, *step.received(node, params)))
    return reply


def node_step_task(region: str) -> Task[[NodeOpParams], NodeOpReply]:
    """The task that runs one node step of ``region``: the caller submits it, that region's executor runs it.

    Its task key differs per region (the function's name is part of Prefect's task key),
    which is what routes a step to its region's executors and no other.
    """

    def run_node_step(params: NodeOpParams) -> NodeOpReply:
        # The executor's own region, not the caller's claim: the standing check compares them.
        return perform(params, os.environ.get(REGION_ENV) or None)

    run_node_step.__name__ = run_node_step.__qualname__ = step_key(region)
    # Persisted: the runbook reads the reply from the result storage every executor and
    # runbook shares.  Keyed by the step's own task run: never answered from another
    # step's result (the same step twice in a run runs twice), and still written (Prefect
    # writes a persisted result under its cache key; without one it writes nothing).
    return Task(
        fn=run_node_step,
        name=f"node-step-{region}",
        task_run_name="{params.operation} {params.node}",  # named by the executor as it starts the step
        persist_result=True,
        cache_key_fn=_own_run_key,
        retries=0,
    )


def _runbook_stand_in() -> None:
    """Never called: see :data:`RUNBOOK_STAND_IN`."""


# A step's submission carries the runbook's run context to the executor (so the step is a
# task run of the runbook's flow run).  That context holds the runbook's flow, which a
# worker loaded from its file under a module name (``failover``) the executor cannot
# import; the submission swaps in this importable stand-in (regionops.node.regional).
RUNBOOK_STAND_IN: Flow[[], None] = Flow(fn=_runbook_stand_in, name="runbook")


def _own_run_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return f"node-step-{context.task_run.id}"


def _claim_state() -> State[Any]:
    # Marked deferred, the proposal is judged by the server's background-task policy, whose
    # PreventPendingTransitions refuses Pending from Pending, Running or Cancelled: the
    # first claim wins, a later one (or one after a cancel) is refused.  Without the mark
    # the core policy would accept Cancelled -> Pending.
    state: State[Any] = Pending()
    state.state_details.deferred = True
    return state


# The server can deliver a step to its executor before the step's row is visible in its
# database (seen on PostgreSQL: the claim answered 404 "Task run not found" 40 ms after the step
# was received, and the step was dropped until its pickup deadline cancelled it).  A claim that
# finds no run is tried again for this long before the step is given up.
CLAIM_NOT_FOUND_SECONDS = 5.0


async def claim(client: PrefectClient, task_run_id: UUID) -> bool:
    """Move a scheduled step to Pending; True when this caller won (the server refuses a second claim)."""
    deadline = asyncio.get_running_loop().time() + CLAIM_NOT_FOUND_SECONDS
    delay = 0.05
    while True:
        try:
            result: OrchestrationResult[Any] = await client.set_task_run_state(task_run_id, _claim_state(), force=False)
            return result.status == SetStateStatus.ACCEPT
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code != 404 or asyncio.get_running_loop().time() >= deadline:
                raise
            log.info("node step %s is not visible on the server yet: claiming it again in %.2f s", task_run_id, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


def claim_sync(client: SyncPrefectClient, task_run_id: UUID) -> bool:
    """:func:`claim` for synchronous callers (the regional operator)."""
    result = client.set_task_run_state(task_run_id, _claim_state(), force=False)
    return result.status == SetStateStatus.ACCEPT


class RegionExecutor(TaskWorker):
    """A Prefect task worker that serves one region's node steps, claiming each before it runs it."""

    def __init__(self, region: str, limit: int = 4):
        # The task's cache key is its own run: TaskWorker keeps it (it swaps in Prefect's
        # DEFAULT policy only for uncached tasks, which would answer a second identical step
        # in the same run from the first one's result).
        super().__init__(node_step_task(region), limit=limit)
        self.region = region

    async def _submit_scheduled_task_run(self, task_run: TaskRun) -> None:
        if not await claim(self._client, task_run.id):
            log.warning(
                "node step %s (%s) was already claimed or cancelled: not running it", task_run.name, task_run.id
            )
            return
        await super()._submit_scheduled_task_run(task_run)


async def serve_region(region: str, limit: int = 4) -> None:
    """Serve ``region``'s node steps until stopped (SIGTERM: Prefect's handler lets running steps finish)."""
    os.environ[REGION_ENV] = region
    log.info("executor of region %s: serving %s", region, step_key(region))
    await RegionExecutor(region, limit=limit).astart()


def main(argv: list[str] | None = None) -> Any:
    """``python -m regionops.node.executor --region eu``: serve a region's node steps."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--region", required=True, help="the region whose node steps this host runs")
    parser.add_argument("--limit", type=int, default=4, help="node steps run at once")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve_region(args.region, args.limit))


if __name__ == "__main__":
    main()
