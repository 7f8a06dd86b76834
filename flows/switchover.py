"""Runbook: switchover, a planned move of the primary with zero data loss.

1. Look at the cluster; pre-check: one reachable primary, the target replica streaming
   from it within the lag bound, nothing fenced.  A failed check changes nothing.
2. (Dry run: show the plan and stop.)  Optional typed approval.
3. Stop writes on the old primary: read-only for new transactions, terminate sessions,
   then stop it cleanly.  Its shutdown checkpoint is the last WAL it will ever write.
4. Wait until the target has replayed that checkpoint (else roll back: restart the old
   primary and give it its writes back).
5. Promote the target; slots for everyone else on it; move the writer record.  If any of
   that fails, exactly one writable primary is still left: a target that was promoted
   gets the move completed; a target that is still a replica (or is stopped and read-only)
   means the old primary is started again with its writes and the writer record on it;
   a target that cannot be reached nor stopped is escalated, the old primary left stopped.
6. Point the other replicas at the new primary; start the old primary as its replica.
7. Verify: a write through the writer endpoint lands on the new primary and reaches
   every replica, and every replica streams from it.
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, Field

from regionops.decisions import check_switchover, decide_switchover_recovery, find_primary
from regionops.errors import RolledBack, VerificationFailed
from regionops.ha.sqlsteps import Promotion
from regionops.lsn import Lsn
from regionops.rescue import rescue_switchover
from regionops.runbook.common import plan_table
from regionops.runbook.context import CHANGE_HOOKS, FlowHooks, RunbookRun
from regionops.runbook.journal import undo_on_cancel
from regionops.runbook.params import ClusterChangeParams
from regionops.runbook.reporting import RunReporter
from regionops.topology import Topology, load_topology
from tasks.nodeops import (
    block_primary_start,
    configure_standby,
    node_running,
    read_control_data,
    start_node,
    stop_node,
)
from tasks.observe import observe_cluster
from tasks.replication import (
    clear_write_fence,
    drop_stale_slots,
    ensure_slots,
    fence_writes,
    fenced_nodes,
    promote,
    repoint_replica,
    switch_writer,
    unfence_writes,
    verify_write,
    wait_replayed,
    wait_streaming,
    writer_node,
)
from tasks.runbook_monitoring import PlannedWorkSilence


class SwitchoverParams(ClusterChangeParams):
    """Parameters of the switchover runbook (rendered as a form in the Prefect UI)."""

    cluster: str | None = Field(None, description="Cluster whose primary moves; default the topology's only cluster")
    target: str | None = Field(None, description="Replica to promote, e.g. us-1; default the most advanced healthy one")
    max_lag_bytes: int | None = Field(
        None, ge=0, description="Refuse when the target lags more; default the topology's bound"
    )
    catch_up_timeout_seconds: float = Field(
        30, gt=0, description="How long the target may take to replay the old primary's last WAL before rolling back"
    )
    verify_timeout_seconds: float = Field(
        60, gt=0, description="How long the final write and streaming checks may take"
    )


class SwitchoverResult(BaseModel):
    """What the switchover did (or would do, in a dry run)."""

    cluster: str
    ok: bool
    dry_run: bool
    old_primary: str
    new_primary: str
    plan: list[str]
    steps: list[str] = []
    final_lsn: Lsn | None = None  # the old primary's shutdown checkpoint, replayed by the target
    timeline: int | None = None

    def sentence(self) -> str:
        if self.dry_run:
            return (
                f"dry run: switchover of {self.cluster} from {self.old_primary} to {self.new_primary} would "
                f"take {len(self.plan)} steps; nothing was changed"
            )
        return (
            f"switched {self.cluster} over from {self.old_primary} to {self.new_primary} (timeline "
            f"{self.timeline}) with no data loss: the target replayed the old primary's final WAL "
            f"{self.final_lsn}; writes verified on the new primary and every replica"
        )


def switchover_plan(old: str, new: str, others: list[str], writer_record: str) -> list[str]:
    """The steps, in order, as the report and the approval form show them."""
    follow = ", ".join(others) if others else "no other replica"
    return [
        f"make {old} read-only and terminate its client sessions (writes stop here)",
        f"stop {old} cleanly; its shutdown checkpoint is its final WAL",
        f"wait until {new} has replayed that final WAL (else roll back: restart {old} with writes)",
        f"promote {new}; create replication slots for the other nodes on it",
        f"point {writer_record} at {new} (writes resume here)",
        f"point {follow} at {new}",
        f"start {old} as a replica of {new}",
        f"verify a write through the writer endpoint lands on {new} and reaches every replica",
    ]


# A cancelled switchover's hook frees its locks and, from its journal, leaves exactly one
# writable primary: the old one given its writes back, or the promotion completed.
SWITCHOVER_HOOKS: FlowHooks = {
    **CHANGE_HOOKS,
    "on_cancellation": [undo_on_cancel("switchover", "Switchover cancelled", rescue_switchover)],
}


@flow(name="switchover", persist_result=True, **SWITCHOVER_HOOKS)
def switchover(params: SwitchoverParams = SwitchoverParams()) -> SwitchoverResult:
    """Move the primary of a cluster to a healthy replica with zero data loss."""
    topology = load_topology(params.topology)
    cluster_name, _ = topology.cluster(params.cluster)
    run = RunbookRun(
        topology,
        "switchover",
        cluster_name,
        f"Switchover of {cluster_name}",
        params,
        start_lines=[
            f"target: {params.target or 'the most advanced healthy replica'}",
            "dry run: nothing will be changed" if params.dry_run else "this run changes the cluster",
        ],
    )
    with run:
        quiet = run.hold(
            PlannedWorkSilence(
                topology,
                cluster_name,
                "switchover",
                run.reporter,
                600 + params.catch_up_timeout_seconds + params.verify_timeout_seconds,
            )
        )
        return _switchover(topology, cluster_name, params, run, quiet)


def _switchover(
    topology: Topology, cluster_name: str, params: SwitchoverParams, run: RunbookRun, quiet: PlannedWorkSilence
) -> SwitchoverResult:
    cluster = topology.clusters[cluster_name]
    reporter = run.reporter
    bound = cluster.health.max_lag_bytes if params.max_lag_bytes is None else params.max_lag_bytes

    # 1. Look, then pre-check.  Nothing changes before the checks pass.
    states = observe_cluster(topology, cluster_name)
    view = find_primary(topology, cluster_name, states, writer_node(topology, cluster_name))
    fenced = fenced_nodes(topology, cluster_name)
    check = check_switchover(
        topology, cluster_name, states, view, target=params.target, max_lag_bytes=bound, fenced=set(fenced)
    )
    if not check.ok:
        raise run.refuse(check.reason)
    reporter.step(check.reason)
    old, new = check.primary, check.target
    assert old is not None and new is not None
    others = [n for n in cluster.nodes if n not in (old, new)]
    reachable_others = [n for n in others if states[n].reachable and states[n].role == "replica"]
    plan = switchover_plan(old, new, reachable_others, topology.writer_record(cluster_name))

    # 2. Dry run or approval.
    if params.dry_run:
        reporter.finish(
            "dry run",
            [f"would switch {cluster_name} over from {old} to {new}; nothing was changed"],
            tables={"plan": plan_table(plan)},
        )
        return SwitchoverResult(
            cluster=cluster_name,
            ok=True,
            dry_run=True,
            old_primary=old,
            new_primary=new,
            plan=plan,
            steps=[s for _, s in reporter.steps],
        )
    if params.require_approval:
        run.approve(plan, f"switchover to {new}")

    # 3-4. Stop writes on the old primary and let the target catch up to its very last WAL.
    #    From here until the writer record names the target, no node may take writes: the
    #    journal says where the run is, so a cancel hook can give them back (SWITCHOVER_HOOKS).
    quiet.begin()  # the primary is about to stop: its alerts must not start a failover
    run.changed = True
    run.remember(old=old, new=new, phase="stopping")
    reporter.step(fence_writes(topology, cluster_name, old).sentence())
    final_lsn = _stop_and_catch_up(topology, cluster_name, old, new, params, reporter)

    # 5. Promote, give everyone a slot on the new primary, move writes there.  From here until
    #    the writer record names the new primary, a failure must still leave exactly one
    #    writable primary: the old one given back its writes, or the move completed.
    run.remember(old=old, new=new, phase="promoting")
    try:
        promotion = promote(topology, cluster_name, new)
        reporter.step(promotion.sentence())
        _move_writes(topology, cluster_name, old, new, others, reporter)
    except Exception as exc:  # noqa: BLE001 - re-raised unless the move could be completed
        promotion = _recover_failed_move(topology, cluster_name, old, new, others, exc, run)
    run.remember(old=old, new=new, phase="moved")

    # 6. Everyone else follows; the old primary becomes a replica of the new one.
    for node in others:
        if node in reachable_others:
            reporter.step(repoint_replica(topology, cluster_name, node, new).sentence())
        else:
            reporter.step(f"{node} was not a reachable replica ({states[node].sentence()}): left for replica-resync")
    reporter.step(configure_standby(topology, cluster_name, old, new).sentence(), slack=False)
    reporter.step(start_node(topology, cluster_name, old).sentence())
    reporter.step(drop_stale_slots(topology, cluster_name, old).sentence(), slack=False)
    reporter.step(clear_write_fence(topology, cluster_name, old).sentence(), slack=False)

    # 7. Verify from the user's side, then replication itself.
    replicas = [old, *reachable_others]
    written = verify_write(topology, cluster_name, new, replicas, params.verify_timeout_seconds, "switchover")
    reporter.step(written.sentence())
    streams = [wait_streaming(topology, cluster_name, n, new, bound, params.verify_timeout_seconds) for n in replicas]
    for check_ in streams:
        reporter.step(check_.sentence(), slack=False)
    if not written.ok or not all(s.ok for s in streams):
        problems = [c.sentence() for c in streams if not c.ok] + ([] if written.ok else [written.sentence()])
        raise VerificationFailed(f"{new} is primary but verification failed: " + "; ".join(problems))

    result = SwitchoverResult(
        cluster=cluster_name,
        ok=True,
        dry_run=False,
        old_primary=old,
        new_primary=new,
        plan=plan,
        steps=[s for _, s in reporter.steps],
        final_lsn=final_lsn,
        timeline=promotion.timeline,
    )
    reporter.finish(
        "succeeded",
        [result.sentence()],
        tables={
            "replicas": [
                {"node": s.node, "streams from": s.primary, "timeline": s.timeline, "lag bytes": s.lag_bytes}
                for s in streams
            ],
        },
    )
    return result


def _move_writes(
    topology: Topology, cluster_name: str, old: str, new: str, others: list[str], reporter: RunReporter
) -> None:
    """Slots for everyone on the new primary, then the writer record onto it (writes resume there)."""
    reporter.step(ensure_slots(topology, cluster_name, new, [old, *others]).sentence(), slack=False)
    reporter.step(switch_writer(topology, cluster_name, new).sentence())


def _recover_failed_move(
    topology: Topology, cluster_name: str, old: str, new: str, others: list[str], failure: Exception, run: RunbookRun
) -> Promotion:
    """A failure after the old primary stopped taking writes: leave exactly one writable primary, and say which.

    Returns the promotion when the move could be completed (the run goes on with step 6);
    raises otherwise: RolledBack when the old primary has its writes back, or the failure
    with an escalation when neither way is safe.
    """
    reporter = run.reporter
    reporter.step(f"the switchover failed after {old} stopped taking writes: {type(failure).__name__}: {failure}")
    target = observe_cluster(topology, cluster_name, [new])[new]
    fenced_on_disk = False
    if not target.reachable:
        # It may have been promoted: only a target stopped and read-only on its disk is safe to leave behind.
        try:
            if node_running(topology, cluster_name, new):
                reporter.step(stop_node(topology, cluster_name, new, "immediate").sentence())
            reporter.step(block_primary_start(topology, cluster_name, new).sentence())
            fenced_on_disk = True
        except Exception as exc:  # noqa: BLE001 - then the decision escalates
            reporter.step(f"could not stop {new} through the node seam: {exc}")
    decision = decide_switchover_recovery(old, new, target, target_fenced_on_disk=fenced_on_disk)
    reporter.step(decision.reason)
    if decision.action == "complete":
        try:
            _move_writes(topology, cluster_name, old, new, others, reporter)
        except Exception as exc:
            run.reporter.alert(
                f"Switchover of {cluster_name}: {new} is primary, the writer record is NOT on it",
                [
                    decision.reason,
                    f"moving the writer record failed: {exc}",
                    f"point {topology.writer_record(cluster_name)} at {new} by hand",
                ],
            )
            raise
        return Promotion(node=new, promoted_lsn=target.current_lsn, timeline=target.timeline, seconds=0)
    if decision.action == "restore-old":
        reporter.step(start_node(topology, cluster_name, old).sentence())
        reporter.step(unfence_writes(topology, cluster_name, old).sentence())
        if writer_node(topology, cluster_name) != old:
            reporter.step(switch_writer(topology, cluster_name, old).sentence())
        raise RolledBack(
            f"switchover of {cluster_name} to {new} failed ({type(failure).__name__}: {failure}); "
            f"rolled back: {old} is the writable primary again and the writer record names it"
        ) from failure
    run.reporter.alert(f"Switchover of {cluster_name} failed with NO writable primary", [decision.reason])
    raise failure


def _stop_and_catch_up(
    topology: Topology, cluster_name: str, old: str, new: str, params: SwitchoverParams, reporter: RunReporter
) -> Lsn:
    """Stop the fenced old primary cleanly and wait for the target to replay its final WAL.

    If that does not happen in time, roll back: the old primary is started again and
    given its writes back, so the failed switchover costs a short write outage, not data.
    """
    stopped = False
    try:
        reporter.step(stop_node(topology, cluster_name, old, "fast").sentence())
        stopped = True
        control = read_control_data(topology, cluster_name, old)
        if control is None:
            raise VerificationFailed(f"{old}'s control file cannot be read after stopping it")
        # The shutdown checkpoint record starts at checkpoint_lsn: replay must be past it.
        caught = wait_replayed(
            topology, cluster_name, new, control.checkpoint_lsn, params.catch_up_timeout_seconds, past=True
        )
        reporter.step(caught.sentence())
        if not caught.reached:
            raise VerificationFailed(caught.sentence())
        return control.checkpoint_lsn
    except Exception:
        reporter.step(f"rolling back: {old} stays primary")
        if stopped:
            reporter.step(start_node(topology, cluster_name, old).sentence())
        reporter.step(unfence_writes(topology, cluster_name, old).sentence())
        raise
