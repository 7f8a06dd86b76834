"""RegionalNodeOperator: every node step runs on the node's region's executor (:mod:`regionops.node.executor`).

The runbook that calls it can run on any region's worker; the step itself is a task run
of the region's node-step task, which only that region's executors receive, so it runs
on the node's region's host.  Submitted from a runbook, the task run belongs to the
runbook's flow run: the Prefect UI shows the step in the runbook's graph.  Its typed
reply is read from its persisted result.  A step that fails, is refused (it stood in the
wrong place) or does not finish in time raises :class:`NodeStepFailed` naming the step,
the node and the step's link; a step no executor claimed within the pickup deadline is
claimed by the caller and cancelled, so it cannot act later behind the runbook's back.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from prefect import get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled

from regionops.errors import DeadlineExceeded, NodeStepFailed, RunbookError
from regionops.node import operations
from regionops.node.executor import RUNBOOK_STAND_IN, claim_sync, node_step_task
from regionops.node.messages import NodeOpParams, NodeOpReply
from regionops.node.operator import NodeOperator
from regionops.node.pgbackrest_step import PgBackRestCommand, PgBackRestRun
from regionops.topology import Topology
from regionops.waiting import poll_until

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 3600.0  # once picked up: a re-clone of a large node takes a while


@contextmanager
def _submission_context() -> Iterator[None]:
    """The run context a step's submission carries to the executor: the flow run's, stripped.

    The task run must belong to the runbook's flow run (the flow run context), but what
    Prefect serialises with it must be loadable by the executor: the runbook's flow (loaded
    by a worker under a module name the executor cannot import) is replaced by an
    importable stand-in, its parameters dropped, and the calling task's context (whose
    parameters may hold clients with locks that do not pickle) is left out.
    """
    flow_context = FlowRunContext.get()
    hidden = TaskRunContext.__var__.set(None)  # type: ignore[arg-type]
    try:
        if flow_context is None:
            yield
        else:
            with flow_context.model_copy(update={"flow": RUNBOOK_STAND_IN, "parameters": {}}):
                yield
    finally:
        TaskRunContext.__var__.reset(hidden)


def _as_raised_there(state: State, where: str, region: str, url: str) -> RunbookError | None:
    """The runbook error the step raised on its host, re-raised here with where it ran (None: not one).

    A refusal (PreconditionFailed), a failed proof (VerificationFailed) or a transient
    error keeps its type across the seam, so a runbook reacts to a regional step exactly
    as to a local one (a refusal changes nothing, a transient error is retried).
    """
    try:
        remote = state.result(raise_on_failure=False)
    except Exception:  # the reply could not be read: the caller names the step instead
        return None
    if not isinstance(remote, RunbookError):
        return None
    try:
        return type(remote)(f"{remote} ({where} on the {region} executor: {url})")
    except TypeError:  # an error with a constructor of its own: raise it as it was
        return remote


class RegionalNodeOperator(NodeOperator):
    """Node steps run by the node's region's executor (a Prefect task run), same protocol as the local one.

    It implements only :meth:`perform`: the typed methods are the protocol's, each a
    call of :meth:`perform` with its entry of :data:`regionops.node.operations.OPERATIONS`.
    """

    def __init__(self, topology: Topology, cluster: str, timeout: float = DEFAULT_TIMEOUT, poll_interval: float = 0.05):
        self.topology = topology
        self.cluster_name, self.cluster = topology.cluster(cluster)
        self.timeout = timeout
        self.poll_interval = poll_interval

    # -- dispatch -----------------------------------------------------------------------
    def run_url(self, run_id: UUID) -> str:
        """The step's task run link in the Prefect UI (its id when the topology names no UI)."""
        return self.topology.prefect.run_link(run_id, kind="task-run") or f"task run {run_id}"

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
        """Run one node step on the node's region's executor and return its typed reply.

        ``fields`` are the step's NodeOpParams fields (peer, mode, repo, stage, activate, pgbackrest).
        """
        region = self.cluster.nodes[node].region
        params = NodeOpParams(
            topology=self.topology, cluster=self.cluster_name, node=node, operation=operation, **fields
        )
        where = f"node step {operation} of {node} (region {region})"
        step = node_step_task(region).with_options(tags=["regionops", "node-step", f"node:{node}", f"region:{region}"])
        # Submitted, not called: the region's executor runs it.  Inside a runbook the task run
        # belongs to the runbook's flow run, so the Prefect UI shows the step under it.
        with _submission_context():
            future = step.apply_async(kwargs={"params": params})
        run_id = future.task_run_id
        url = self.run_url(run_id)
        state = self._wait(run_id, where, node, region, operation, url)
        if not state.is_completed():
            failure = NodeStepFailed(
                f"{where} ended {state.name}: {state.message or 'no message'}",
                node=node,
                operation=operation,
                run_url=url,
            )
            remote = _as_raised_there(state, where, region, url)
            if remote is not None:
                raise remote from failure
            raise failure
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

    def _wait(self, run_id: UUID, where: str, node: str, region: str, operation: str, url: str) -> State:
        """Wait for the region's executor to claim the step (pickup deadline), then for it to end (step deadline)."""
        with get_client(sync_client=True) as client:
            seen: list[State | None] = [None]

            def reached(done: Callable[[State], bool]) -> Callable[[], bool]:
                def check() -> bool:
                    try:
                        seen[0] = client.read_task_run(run_id).state
                    except ObjectNotFound as exc:
                        # A task worker deletes a step it cannot load (its parameters unreadable,
                        # e.g. an executor running another regionops version): say so, do not hang.
                        raise NodeStepFailed(
                            f"{where}: the {region} executor dropped the step without running it (it could "
                            f"not load it: see the executor's log, and check it runs the same regionops "
                            f"version and shares the step storage)",
                            node=node,
                            operation=operation,
                            run_url=url,
                        ) from exc
                    return seen[0] is not None and done(seen[0])

                return check

            pickup = self.topology.prefect.node_pickup_seconds
            try:
                poll_until(
                    reached(lambda s: not s.is_scheduled()),
                    timeout=pickup,
                    interval=self.poll_interval,
                    what=f"the {region} executor to pick up {where}",
                )
            except DeadlineExceeded as exc:
                if self._cancel_unclaimed(client, run_id):
                    raise NodeStepFailed(
                        f"{where}: no executor of region {region} picked it up within {pickup:g} s "
                        f"(is the {region} executor running?); the step was cancelled so it cannot act later",
                        node=node,
                        operation=operation,
                        run_url=url,
                    ) from exc
                # An executor claimed it at the last moment: it runs; wait for it like any other.
            try:
                poll_until(
                    reached(lambda s: s.is_final()),
                    timeout=self.timeout,
                    interval=self.poll_interval,
                    what=f"{where} to finish",
                )
            except DeadlineExceeded as exc:
                raise NodeStepFailed(
                    f"{where} did not finish within {self.timeout:g} s (last state "
                    f"{seen[0].name if seen[0] else 'unknown'}); it may still be running on the {region} host: "
                    f"look at the step's run before acting on {node}",
                    node=node,
                    operation=operation,
                    run_url=url,
                ) from exc
            assert seen[0] is not None
            return seen[0]

    @staticmethod
    def _cancel_unclaimed(client: SyncPrefectClient, run_id: UUID) -> bool:
        """Claim the step as an executor would, then cancel it; False when an executor claimed it first."""
        if not claim_sync(client, run_id):
            return False
        client.set_task_run_state(run_id, Cancelled(message="no executor picked it up in time"), force=True)
        return True

    # -- the protocol: every step is the NodeOperator's, through perform(), but one ---------
    def pgbackrest(self, node: str, command: PgBackRestCommand) -> PgBackRestRun:
        """Run one pgBackRest command on the node's worker, waiting as long as the command may take."""
        # A backup may run for hours: wait as long as the command may take, and a minute for the run around it.
        patient = copy.copy(self)
        patient.timeout = max(self.timeout, command.timeout + 60)
        return patient.perform("pgbackrest", node, command)
