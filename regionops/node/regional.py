"""RegionalNodeOperator: every node step is a run of the node-operation deployment on the node's region pool.

The runbook that calls it can run on any region's worker; the step itself runs on a
worker of ``regions.<node's region>.work_pool`` (deployment ``node-operation/<region>``),
as a child run of the calling task, so the Prefect UI shows it under the runbook.  The
child's typed reply is read from its persisted result.  A child that fails, crashes, is
refused (it stood in the wrong place) or does not finish in time raises
:class:`NodeStepFailed` naming the step, the node and the child run's link; a child that
did not finish is cancelled first, so it cannot act later behind the runbook's back.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.objects import FlowRun, State
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled

from regionops.errors import DeadlineExceeded, NodeStepFailed
from regionops.node import operations
from regionops.node.messages import NodeOpParams, NodeOpReply, deployment_name
from regionops.node.operator import NodeOperator
from regionops.node.pgbackrest_step import PgBackRestCommand, PgBackRestRun
from regionops.topology import Topology
from regionops.waiting import poll_until

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 3600.0  # once picked up: a re-clone of a large node takes a while


class RegionalNodeOperator(NodeOperator):
    """Node steps run by the node's regional worker (``run_deployment``), same protocol as the local one.

    It implements only :meth:`perform`: the typed methods are the protocol's, each a
    call of :meth:`perform` with its entry of :data:`regionops.node.operations.OPERATIONS`.
    """

    def __init__(self, topology: Topology, cluster: str, timeout: float = DEFAULT_TIMEOUT, poll_interval: float = 0.5):
        self.topology = topology
        self.cluster_name, self.cluster = topology.cluster(cluster)
        self.timeout = timeout
        self.poll_interval = poll_interval

    # -- dispatch -----------------------------------------------------------------------
    def pool(self, node: str) -> str:
        """The work pool whose worker runs ``node``'s steps."""
        return self.topology.regions[self.cluster.nodes[node].region].work_pool

    def run_url(self, run_id: UUID) -> str:
        """The child run's link in the Prefect UI (its id when the topology names no UI)."""
        return self.topology.prefect.run_link(run_id) or f"flow run {run_id}"

    def perform(self, operation: str, node: str, *args: Any) -> Any:
        """Run the step named ``operation`` on the node's regional worker; its typed result from the reply."""
        step = operations.operation(operation)
        reply = self.call(node, step.name, **step.shipped(args))
        value = getattr(reply, step.reply)
        if value is None and not step.optional:
            raise NodeStepFailed(
                f"node step {step.name} of {node} returned no {step.reply}", node=node, operation=step.name
            )
        return value

    def call(self, node: str, operation: str, **fields: Any) -> NodeOpReply:
        """Run one node step on the node's regional worker and return its typed reply.

        ``fields`` are the step's NodeOpParams fields (peer, mode, repo, stage, activate, pgbackrest).
        """
        region = self.cluster.nodes[node].region
        params = NodeOpParams(
            topology=self.topology, cluster=self.cluster_name, node=node, operation=operation, **fields
        )
        where = f"node step {operation} of {node} (region {region}, pool {self.pool(node)})"
        try:
            # timeout=0: only create the (child) run; the waits below have deadlines of their own.
            run = run_deployment(
                deployment_name(region),
                parameters={"params": params.model_dump(mode="json")},
                timeout=0,
                flow_run_name=f"{operation} {node}",
                tags=["regionops", "node-operation", f"node:{node}"],
            )
        except ObjectNotFound as exc:
            raise NodeStepFailed(
                f"{where} could not start: there is no deployment {deployment_name(region)} "
                f"(deploy the node-operation flow to that pool)",
                node=node,
                operation=operation,
            ) from exc
        # run_deployment is sync-compatible: called from sync code (as here) it returns the run itself.
        assert isinstance(run, FlowRun), f"run_deployment returned {type(run).__name__} in a sync context"
        url = self.run_url(run.id)
        state = self._wait(run.id, where, node, operation, url)
        if not state.is_completed():
            raise NodeStepFailed(
                f"{where} ended {state.name}: {state.message or 'no message'}",
                node=node,
                operation=operation,
                run_url=url,
            )
        reply = state.result()
        if not isinstance(reply, NodeOpReply):
            raise NodeStepFailed(
                f"{where} returned {type(reply).__name__}, not a node-operation reply",
                node=node,
                operation=operation,
                run_url=url,
            )
        log.info("%s -> %s (%s)", where, reply.sentence(), url)
        return reply

    def _wait(self, run_id: UUID, where: str, node: str, operation: str, url: str) -> State:
        """Wait for a worker to pick the run up (pickup deadline), then for it to end (step deadline)."""
        seen: list[State | None] = [None]

        def reached(done: Callable[[State], bool]) -> Callable[[], bool]:
            def check() -> bool:
                with get_client(sync_client=True) as client:
                    seen[0] = client.read_flow_run(run_id).state
                return seen[0] is not None and done(seen[0])

            return check

        pickup = self.topology.prefect.node_pickup_seconds
        try:
            poll_until(
                reached(lambda s: not s.is_scheduled()),
                timeout=pickup,
                interval=self.poll_interval,
                what=f"a worker of pool {self.pool(node)} to pick up {where}",
            )
        except DeadlineExceeded as exc:
            self._cancel(run_id)
            raise NodeStepFailed(
                f"{where}: no worker of pool {self.pool(node)} picked it up within {pickup:.0f} s "
                f"(is the {self.cluster.nodes[node].region} worker running?); the run was "
                f"cancelled so it cannot act later",
                node=node,
                operation=operation,
                run_url=url,
            ) from exc
        try:
            poll_until(
                reached(lambda s: s.is_final()),
                timeout=self.timeout,
                interval=self.poll_interval,
                what=f"{where} to finish",
            )
        except DeadlineExceeded as exc:
            self._cancel(run_id)
            raise NodeStepFailed(
                f"{where} did not finish within {self.timeout:.0f} s (last state "
                f"{seen[0].name if seen[0] else 'unknown'}); the run was cancelled",
                node=node,
                operation=operation,
                run_url=url,
            ) from exc
        assert seen[0] is not None
        return seen[0]

    @staticmethod
    def _cancel(run_id: UUID) -> None:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(run_id, Cancelled(message="the calling runbook stopped waiting"), force=True)

    # -- the protocol: every step is the NodeOperator's, through perform(), but one ---------
    def pgbackrest(self, node: str, command: PgBackRestCommand) -> PgBackRestRun:
        """Run one pgBackRest command on the node's worker, waiting as long as the command may take."""
        # A backup may run for hours: wait as long as the command may take, and a minute for the run around it.
        patient = copy.copy(self)
        patient.timeout = max(self.timeout, command.timeout + 60)
        return patient.perform("pgbackrest", node, command)
