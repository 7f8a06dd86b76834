"""Runbook: failover, the unplanned promotion of the best replica when the primary is gone.

1. Take the cluster's lock (a second failover of the same cluster is refused, visibly).  A
   failover goes first: a run that holds the lock but has changed nothing yet (a
   switchover waiting for approval) loses it and stops at its first change; a run that
   has changed the cluster is waited for (``lock_wait_seconds``; an alert's run waits up
   to 30 minutes) and the wait is reported.  An alert's run pages in Slack whenever it
   ends without failing over (``page_if_no_failover``).
2. Find the primary and confirm it is down: failed probes and every reachable replica's
   WAL receiver has lost it (not streaming, or silent past its wal_receiver_timeout), at
   once; without replica evidence, only after the probes failed for ``grace_seconds`` (the
   ceiling).  Never while a replica still hears it.  Otherwise refuse, changing nothing.
3. Let replicas replay what they received; choose the most advanced healthy replica.
   None eligible: refuse, changing nothing.
4. (Dry run: show the plan and stop.)  Optional typed approval.
5. Fence the old primary: if it answers again, make it refuse writes over SQL
   (read-only default, sessions terminated); stop it through the node seam if it
   still runs, make its data directory start read-only; record the fence in the
   cluster's home bucket, so no runbook on any worker, nor DNS, points at it again.
6. Promote the candidate; move the writer record (writes are accepted from here: only
   now is Slack told of the steps so far).
7. Slots for the others on it; point the other replicas at it (they follow the new timeline).
8. Verify a write through the writer endpoint lands there and reaches every replica.
9. Estimate the data lost (old primary's last WAL vs the promoted position) and report.
"""

from __future__ import annotations

from typing import Any

from prefect import Task, flow
from prefect.context import FlowRunContext
from pydantic import BaseModel, Field

from regionops.decisions import (
    DataLossEstimate,
    PromotionDecision,
    assess_failover_loss,
    choose_promotion_candidate,
    find_primary,
)
from regionops.errors import RunbookError, VerificationFailed
from regionops.ha.fencing import FenceMarker, OldPrimaryFence
from regionops.ha.sqlsteps import Promotion
from regionops.lsn import Lsn
from regionops.model import NodeState
from regionops.routing import drain_for_lost_database
from regionops.runbook.common import plan_table
from regionops.runbook.context import CHANGE_HOOKS, RunbookRun
from regionops.runbook.params import ClusterChangeParams
from regionops.runbook.reporting import RunReporter
from regionops.topology import Topology, load_topology
from tasks.nodeops import fence_on_host, read_wal_end
from tasks.observe import observe_cluster
from tasks.replication import (
    confirm_primary_down,
    current_fencer,
    fence_writes,
    fenced_nodes,
    follow_new_primary,
    mark_fenced,
    promote,
    replay_received,
    switch_writer,
    verify_write,
    writer_node,
)


class FailoverParams(ClusterChangeParams):
    """Parameters of the failover runbook (rendered as a form in the Prefect UI; an alert fills `cluster`)."""

    cluster: str | None = Field(None, description="Cluster whose primary is down; default the topology's only cluster")
    node: str | None = Field(None, description="The node an alert says is down; refused if it is not the primary")
    reason: str | None = Field(None, description="What started this run (alert, human note); quoted in the report")
    exclude_regions: list[str] = Field(default_factory=list, description="Regions whose replicas must not be promoted")
    probes: int = Field(3, ge=2, description="Failed connection attempts needed to call the primary down")
    grace_seconds: float = Field(
        10,
        ge=0,
        description="The most confirmation waits: down as soon as the probes failed and every reachable "
        "replica's WAL receiver lost the primary; without that evidence, down only after the probes failed "
        "this long with no replica hearing it",
    )
    probe_timeout_seconds: float = Field(2, gt=0, description="Connect timeout of one probe")
    replay_wait_seconds: float = Field(
        5, ge=0, description="How long replicas may take to replay WAL they received before one is chosen"
    )
    verify_timeout_seconds: float = Field(60, gt=0, description="How long the write verification may take")
    approval_timeout_seconds: int = ClusterChangeParams.default("approval_timeout_seconds", 900)
    page_if_no_failover: bool = Field(
        False,
        description="Page in Slack when the run ends without failing over, with the reason (the alert "
        "trigger sets it: a primary-down alert must never go unanswered silently)",
    )


class FailoverResult(BaseModel):
    """What the failover did (or would do, in a dry run)."""

    cluster: str
    ok: bool
    dry_run: bool
    old_primary: str
    new_primary: str
    down_reason: str
    choice_reason: str
    plan: list[str]
    steps: list[str] = []
    fence: OldPrimaryFence | None = None
    promoted_lsn: Lsn | None = None
    timeline: int | None = None
    followers: list[str] = []
    writes_accepted_after_seconds: float | None = None  # from the run's start
    data_loss: DataLossEstimate | None = None
    data_loss_source: str | None = None

    def sentence(self) -> str:
        if self.dry_run:
            return (
                f"dry run: would fail {self.cluster} over from {self.old_primary} to {self.new_primary}; "
                f"nothing was changed"
            )
        loss = self.data_loss.reason if self.data_loss else "data loss unknown"
        return (
            f"failed {self.cluster} over from {self.old_primary} to {self.new_primary} (timeline "
            f"{self.timeline}); writes accepted {self.writes_accepted_after_seconds:.1f} s after the run "
            f"started; {loss}"
        )


def failover_plan(old: str, new: str, followers: list[str], writer_record: str) -> list[str]:
    """The steps, in order, as the report and the approval form show them."""
    return [
        f"fence {old}: refuse writes over SQL if it answers, stop it if it still runs, make its data directory "
        f"start read-only, record the fence in the cluster's home bucket",
        f"promote {new}",
        f"point {writer_record} at {new}",
        f"create replication slots for the other nodes on {new}; point {', '.join(followers) or 'no other replica'} "
        f"at it (they follow its new timeline)",
        f"verify a write through the writer endpoint lands on {new} and reaches every replica",
        f"estimate the data lost: {old}'s last WAL vs the position {new} was promoted at",
    ]


@flow(name="failover", persist_result=True, **CHANGE_HOOKS)
def failover(params: FailoverParams = FailoverParams()) -> FailoverResult:
    """Promote the best replica of a cluster whose primary is down, fencing the old one."""
    topology = load_topology(params.topology)
    cluster_name, _ = topology.cluster(params.cluster)
    run = RunbookRun(
        topology,
        "failover",
        cluster_name,
        f"Failover of {cluster_name}",
        params,
        start_lines=[
            f"started by: {params.reason or 'a human'}",
            "dry run: nothing will be changed" if params.dry_run else "this run changes the cluster",
        ],
    )
    try:
        with run:
            return _failover(topology, cluster_name, params, run)
    except Exception as exc:
        if params.page_if_no_failover:
            _page_no_failover(cluster_name, params, run, exc)
        raise


def _page_no_failover(cluster_name: str, params: FailoverParams, run: RunbookRun, exc: Exception) -> None:
    """A primary-down alert that did not lead to a failover is a page, never a silent refusal."""
    what = (
        "the failover failed half-way: the cluster WAS changed"
        if run.changed
        else "nothing was changed: the primary may still be down"
    )
    run.reporter.alert(
        f"PAGE: primary-down alert on {cluster_name} did not lead to a failover",
        [
            f"started by: {params.reason or 'an alert'}",
            f"why: {type(exc).__name__}: {exc}",
            what,
            "check region health now; runbooks/failover.md says what to do next",
        ],
    )


class _SlackLater:
    """Steps on the way to writes accepted are recorded at once and posted to Slack after them.

    Nothing between the run's start and the writer record's move waits for Slack; the
    thread still gets every step, in order, as soon as writes are accepted (or the run
    stops, or asks for approval).
    """

    def __init__(self, reporter: RunReporter):
        self.reporter = reporter
        self.mark: int | None = len(reporter.steps)

    def step(self, sentence: str) -> None:
        self.reporter.step(sentence, slack=self.mark is None)

    def flush(self) -> None:
        if self.mark is None:
            return
        held, self.mark = self.reporter.steps[self.mark :], None
        for _, sentence in held:
            self.reporter.post_to_thread(sentence)


def _failover(topology: Topology, cluster_name: str, params: FailoverParams, run: RunbookRun) -> FailoverResult:
    later = _SlackLater(run.reporter)
    try:
        return _failover_steps(topology, cluster_name, params, run, later)
    finally:
        later.flush()


def _failover_steps(
    topology: Topology, cluster_name: str, params: FailoverParams, run: RunbookRun, later: _SlackLater
) -> FailoverResult:
    cluster = topology.clusters[cluster_name]
    reporter = run.reporter

    # 2. Which node was the primary, and is it really down?
    # The shared fence records and the writer record are read while the nodes are observed.
    fenced_f = fenced_nodes.submit(topology, cluster_name)
    writer_f = writer_node.submit(topology, cluster_name)
    states = observe_cluster(topology, cluster_name)
    fenced = fenced_f.result()
    view = find_primary(topology, cluster_name, states, writer_f.result())
    if view.primary is None:
        raise run.refuse(f"cannot tell which node is the primary: {view.reason}")
    old = view.primary
    if params.node and params.node != old:
        raise run.refuse(f"the alert names {params.node}, but the primary is {old} ({view.reason})")
    replicas = [n for n in cluster.nodes if n != old]
    check = confirm_primary_down(
        topology, cluster_name, old, replicas, params.probes, params.grace_seconds, params.probe_timeout_seconds
    )
    states = {**states, **check.replica_states}
    down = check.decision
    if not down.down:
        later.flush()
        raise run.refuse(f"failover refused: {down.reason} (after {check.seconds:.1f} s)")
    later.step(f"{down.reason} (confirmed in {check.seconds:.1f} s)")

    # 3. Choose the replica that holds the most WAL.
    states = {**states, **_replay_received(topology, cluster_name, states, replicas, params.replay_wait_seconds)}
    choice = choose_promotion_candidate(
        topology, cluster_name, states, old_primary=old, exclude_regions=set(params.exclude_regions), fenced=set(fenced)
    )
    if choice.candidate is None:
        later.flush()
        raise run.refuse(f"failover refused: {choice.reason}")
    later.step(choice.reason)
    new = choice.candidate
    followers = [n for n in replicas if n != new and states[n].reachable and states[n].role == "replica"]
    plan = failover_plan(old, new, followers, topology.writer_record(cluster_name))

    # 4. Dry run or approval.
    if params.dry_run or params.require_approval:
        later.flush()
    if params.dry_run:
        reporter.finish(
            "dry run",
            [f"would fail over from {old} to {new}; nothing was changed"],
            tables={"plan": plan_table(plan), "candidates": _ranking(choice)},
        )
        return FailoverResult(
            cluster=cluster_name,
            ok=True,
            dry_run=True,
            old_primary=old,
            new_primary=new,
            down_reason=down.reason,
            choice_reason=choice.reason,
            plan=plan,
            steps=[s for _, s in reporter.steps],
        )
    if params.require_approval:
        run.approve(plan, f"promote {new}")

    # 5. Fence the old primary before anything else can take writes.
    run.changed = True
    fence = _fence(topology, cluster_name, old, states, reporter)
    # Only when the topology asks (application.traffic.drain_on_database_loss; off by default).
    drained = drain_for_lost_database(topology, cluster.nodes[old].region, f"failover: database {old} is lost")
    if drained is not None:
        later.step(drained.sentence())

    # 6. Promote, then the writer record: from here on writes reach the new primary.
    promotion = promote(topology, cluster_name, new)
    later.step(promotion.sentence())
    later.step(switch_writer(topology, cluster_name, new).sentence())
    later.flush()  # writes are accepted from here on: the report may take its time

    # 7. The other replicas follow the new timeline (their slots first).
    slots, repoints = follow_new_primary(topology, cluster_name, new, followers, [n for n in cluster.nodes if n != new])
    reporter.step(slots.sentence(), slack=False)  # detail: the report, not Slack
    for repoint in repoints:
        reporter.step(repoint.sentence())
    for node in replicas:
        if node not in followers and node != new:
            reporter.step(f"{node} is not a reachable replica ({states[node].sentence()}): left for replica-resync")

    # 8. Writes work, and reach every follower.
    written = verify_write(topology, cluster_name, new, followers, params.verify_timeout_seconds, "failover")
    reporter.step(written.sentence())
    accepted_after = (written.accepted_at - reporter.started_at).total_seconds() if written.accepted_at else None

    # 9. What did it cost?
    loss, source = _data_loss(topology, cluster_name, old, replicas, states, promotion)
    reporter.step(f"data loss: {loss.reason} (old primary's last LSN from {source})")

    result = FailoverResult(
        cluster=cluster_name,
        ok=written.ok,
        dry_run=False,
        old_primary=old,
        new_primary=new,
        down_reason=down.reason,
        choice_reason=choice.reason,
        plan=plan,
        steps=[s for _, s in reporter.steps],
        fence=fence,
        promoted_lsn=promotion.promoted_lsn,
        timeline=promotion.timeline,
        followers=followers,
        writes_accepted_after_seconds=round(accepted_after, 2) if accepted_after is not None else None,
        data_loss=loss,
        data_loss_source=source,
    )
    tables = {"candidates": _ranking(choice)}
    if not written.ok:
        reporter.finish(
            "failed",
            [f"{new} is primary but writes are not verified: {written.sentence()}", fence.sentence(), loss.reason],
            tables=tables,
        )
        raise VerificationFailed(written.sentence())
    reporter.finish(
        "succeeded",
        [result.sentence(), fence.sentence(), f"run replica-resync to bring {old} back as a replica"],
        tables=tables,
    )
    return result


def _replay_received(
    topology: Topology, cluster_name: str, states: dict[str, NodeState], replicas: list[str], timeout: float
) -> dict[str, NodeState]:
    """Give replicas a moment to replay WAL they already hold, then observe them again.

    The candidate is ranked by replayed WAL; WAL received but not yet replayed would be
    replayed at promotion anyway, so waiting briefly makes the ranking reflect what each
    replica really holds.
    """
    received: dict[str, Lsn] = {}
    for n in replicas:
        receive, replay = states[n].receive_lsn, states[n].replay_lsn
        if states[n].reachable and receive and replay and replay < receive:
            received[n] = receive
    if not received:
        return {}
    return replay_received(topology, cluster_name, received, timeout)


class _Done:
    """A step already run (outside a flow): its result, or its error raised again."""

    def __init__(self, value: Any = None, error: RunbookError | None = None):
        self.value, self.error = value, error

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


def _begin(step: Task[..., Any], *args: Any) -> Any:
    """Start ``step`` concurrently inside a flow run (a future); outside one, run it now."""
    if FlowRunContext.get() is not None:
        return step.submit(*args)
    try:
        return _Done(step(*args))
    except RunbookError as exc:
        return _Done(error=exc)


def _fence(
    topology: Topology, cluster_name: str, old: str, states: dict[str, NodeState], reporter: RunReporter
) -> OldPrimaryFence:
    """Make sure the old primary can never take writes again, before anything is promoted.

    An old primary that was only unreachable (a freeze that ended, a partition that
    healed) may answer again and still be a primary.  So, in this order: make it refuse
    writes over SQL when it answers (read-only default, client sessions terminated);
    stop it through the node seam (a hung server is killed) and make any restart
    read-only (standby.signal); and always record the fence in the shared store, the one
    fence that needs no access to its machine and that every worker sees.
    """
    notes: list[str] = []
    read_only = stopped = False
    # The SQL fence and the fence on the old primary's host at once: one node step (stop it if
    # it runs, write standby.signal), so the failover pays one round trip to that host.
    sql_fence = _begin(fence_writes, topology, cluster_name, old)
    on_host = _begin(fence_on_host, topology, cluster_name, old)
    try:
        notes.append(sql_fence.result().sentence())
        read_only = True
    except RunbookError as exc:
        notes.append(f"{old} did not answer over SQL, so it could not be made read-only ({exc})")
    try:
        notes.append(on_host.result().sentence())
        stopped = True
    except RunbookError as exc:
        notes.append(f"{old} could not be stopped or fenced on disk: {exc}")
    last = states[old]
    marker = FenceMarker(
        cluster=cluster_name,
        node=old,
        stopped=stopped,
        read_only=read_only,
        reason="failed over: it was the primary and was found down",
        last_lsn=last.current_lsn,
        timeline=last.timeline,
        by=current_fencer(topology, "failover"),
    )
    fence = OldPrimaryFence(
        node=old, read_only=read_only, stopped=stopped, notes=notes, record=mark_fenced(topology, marker)
    )
    reporter.step(fence.sentence(), slack=False)  # posted with the other steps once writes are accepted
    return fence


def _data_loss(
    topology: Topology,
    cluster_name: str,
    old: str,
    replicas: list[str],
    states: dict[str, NodeState],
    promotion: Promotion,
) -> tuple[DataLossEstimate, str]:
    """Estimate the loss (pure: :func:`assess_failover_loss`) from the old primary's WAL end when readable."""
    try:
        wal_end = read_wal_end(topology, cluster_name, old)
    except RunbookError:
        wal_end = None  # its disk is out of reach: the decision falls back to what the replicas hold
    loss = assess_failover_loss(
        promotion.promoted_lsn,
        old_primary=states[old],
        replicas=[states[n] for n in replicas],
        wal_end_lsn=wal_end.lsn if wal_end else None,
        wal_end_note=wal_end.sentence() if wal_end else "",
        old_last_commit_at=wal_end.last_commit_at if wal_end else None,
        promoted_last_commit_at=promotion.last_replayed_commit_at,
    )
    return loss.estimate, loss.source


def _ranking(choice: PromotionDecision) -> list[dict[str, object]]:
    return [
        {
            "rank": r.rank,
            "node": r.node,
            "region": r.region,
            "lsn": str(r.lsn) if r.lsn else None,
            "priority": r.priority,
            "eligible": r.eligible,
            "why": r.why,
        }
        for r in choice.ranking
    ]
