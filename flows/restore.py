"""Runbook: restore a backup set onto a node, for real, to a point in time.

For rebuilding a lost replica, a new primary after total loss, or undoing a mistake
(a dropped table) by going back to just before it.

1. Facts (a node step on the node's host): free disk, running, holds data, and the
   backup sets ``pgbackrest info`` lists in the chosen repository.
2. Plan: the set (``label``, default the newest; for a time/LSN target the newest that
   ended before it; refused when it does not exist or ends after the target), the
   target (default the set's proof restore point, else the end of the archive; a
   replica stops at the backup's end instead and streams the rest), the role.
   ``dry_run`` stops here; ``require_approval`` pauses for a typed approval.
3. Stage (a node step): ``pgbackrest restore`` into an EMPTY directory beside the data
   directory (a used one is refused), start it on a loopback port, wait for the target,
   prove it (the proof's fingerprint at its restore point; otherwise rows per
   fingerprint table), stop it.  The node's data directory is untouched so far.
4. Activate (a node step): swap it in (the old directory kept aside), role replica or
   primary, start; a failure swaps back.  The old directory goes unless ``keep_old``.

Takes the cluster's change lock first: the plan, the approval (up to an hour) and the
restore all happen under it, and the plan is made again after the approval (anything
changed: refused).  A node is restored as a primary only when no other node can be one:
another primary, a fenced node or an unreachable one refuse it, unless the operator
names it in ``confirmed_down`` (it is fenced first).  A restored primary gets the writer
record.  Node steps go through the node seam: inline on a single machine, or, with
``node_operator: regional``, as child runs of the node-operation deployment on the
node's region pool, where the node's disk is.
"""

from __future__ import annotations

import time
from typing import Literal

from prefect import flow
from pydantic import BaseModel, Field

from regionops.backup.restore import plan_restore
from regionops.drivers.pgbackrest import plan_stanza
from regionops.drivers.pgconf import slot_name
from regionops.drivers.postgres import conninfo_for
from regionops.errors import RunbookError
from regionops.ha.fencing import FenceMarker
from regionops.model.restore import (
    ActivateRequest,
    Activation,
    Phase,
    RestorePlan,
    StageRequest,
    TableCheck,
)
from regionops.runbook.context import CHANGE_HOOKS, RunbookRun
from regionops.runbook.params import ClusterChangeParams, RestoreTargetParams
from regionops.topology import Topology, load_topology
from tasks import restore as rt
from tasks.nodeops import block_primary_start
from tasks.observe import observe_node
from tasks.replication import clear_fence, current_fencer, fenced_nodes, mark_fenced, switch_writer


class RestoreParams(ClusterChangeParams, RestoreTargetParams):
    """Parameters of the restore runbook (rendered as a form in the Prefect UI)."""

    cluster: str | None = Field(None, description="Cluster of the node; default the topology's only cluster")
    node: str = Field(description="Node to restore onto (its data directory is replaced only after verification)")
    role: Literal["auto", "replica", "primary"] = Field(
        "auto",
        description="replica: stream from the current primary; primary: a new primary (no other may run); "
        "auto: replica when a primary runs, else primary",
    )
    confirmed_down: list[str] = Field(
        default_factory=list,
        description="Other nodes you confirm are stopped or lost for good: restoring a primary "
        "refuses while another node is unreachable or fenced unless it is named "
        "here (each named node is fenced first, so it can never start as a "
        "second primary)",
    )
    keep_old: bool = Field(
        False, description="Keep the old data directory after success (as <data_dir>.pre-restore-<id>)"
    )
    require_approval: bool = ClusterChangeParams.default("require_approval", True)
    approval_timeout_seconds: int = ClusterChangeParams.default("approval_timeout_seconds", 3600)
    lock_wait_seconds: float = ClusterChangeParams.default("lock_wait_seconds", 30)
    start_timeout_seconds: int = Field(600, gt=0, description="How long PostgreSQL may take to start")
    recovery_timeout_seconds: float = Field(1800, gt=0, description="How long recovery may take to reach the target")


class RestoreResult(BaseModel):
    """What a restore run did (or, in a dry run, would do)."""

    plan: RestorePlan
    dry_run: bool
    phases: list[Phase] = []
    tables: list[TableCheck] = []
    verified_at: float | None = Field(None, description="monotonic seconds into the run when verification passed")
    swapped_at: float | None = Field(None, description="monotonic seconds into the run when directories were swapped")
    activation: Activation | None = None
    cleanup: str | None = None

    def sentence(self) -> str:
        """The run in one line."""
        if self.dry_run:
            return f"dry run: would {self.plan.sentence()}"
        rows = "; ".join(f"{t.table} {t.restored_rows} rows" for t in self.tables)
        return (
            f"restored backup {self.plan.label} to {self.plan.target.describe()} onto {self.plan.node} as "
            f"{self.plan.role}, verified before the swap ({rows or 'no fingerprint tables'}); "
            f"{self.cleanup or ''}".rstrip("; ")
        )


@flow(name="restore", persist_result=True, **CHANGE_HOOKS)
def restore(params: RestoreParams) -> RestoreResult:
    """Restore a backup onto a node: beside its data, verified, then swapped in."""
    topology = load_topology(params.topology)
    cluster_name, _ = topology.cluster(params.cluster)
    topology.node(cluster_name, params.node)  # fail early, naming the node, when it is unknown
    stanza = plan_stanza(topology, cluster_name)
    repo = stanza.repository(params.region) if params.region else stanza.repositories[0]
    wanted = f"{params.target_type} {params.target}" if params.target else params.target_type
    run = RunbookRun(
        topology,
        "restore",
        cluster_name,
        f"Restore of {params.node} ({cluster_name})",
        params,
        start_lines=[
            f"node {params.node}, backup {params.label or 'newest'} from {repo.sentence()}, "
            f"target {wanted}" + (" (dry run)" if params.dry_run else "")
        ],
    )
    with run:  # the cluster's change lock is taken before the plan: nothing moves under it
        result = _run(params, topology, cluster_name, repo.region, repo.index, run)
        run.reporter.finish(
            "dry run" if params.dry_run else "succeeded",
            [result.sentence()],
            tables={
                "phases": [
                    {"phase": p.phase, "seconds": round(p.seconds, 2), "detail": p.detail} for p in result.phases
                ]
            },
        )
        return result


def _plan(params: RestoreParams, topology: Topology, cluster_name: str, region: str | None, repo: int) -> RestorePlan:
    """Observe the cluster, its fences and the node's disk (a node step), and plan.  Changes nothing."""
    cluster = topology.clusters[cluster_name]
    states = {
        n: f.result() for n, f in {n: observe_node.submit(topology, cluster_name, n) for n in cluster.nodes}.items()
    }
    fenced = fenced_nodes(topology, cluster_name)
    # The node's disk (free space, running, holds data) and the repository's sets are read on
    # the node's host: a node step (pgBackRest and the repository are reachable there).
    disk = rt.restore_facts(topology, cluster_name, params.node, repo)
    target = rt.choose_target(
        topology, cluster_name, region, disk.sets, repo, params.label, params.target_type, params.target
    )
    return plan_restore(
        topology,
        cluster_name,
        params.node,
        target,
        states,
        disk,
        params.role,
        fenced=set(fenced),
        confirmed_down=params.confirmed_down,
    )


def _what_changed(before: RestorePlan, after: RestorePlan) -> list[str]:
    """What differs between the approved plan and the plan made again after the approval."""
    fields = {
        "role": "role",
        "primary": "primary to follow",
        "label": "backup set",
        "node_running": "node running",
        "node_has_data": "node holds data",
    }
    changed = [
        f"{what}: {getattr(before, f)} -> {getattr(after, f)}"
        for f, what in fields.items()
        if getattr(before, f) != getattr(after, f)
    ]
    if before.target.describe() != after.target.describe():
        changed.append(f"target: {before.target.describe()} -> {after.target.describe()}")
    return changed


def _run(
    params: RestoreParams, topology: Topology, cluster_name: str, region: str | None, repo: int, run: RunbookRun
) -> RestoreResult:
    cluster = topology.clusters[cluster_name]
    reporter = run.reporter
    plan = _plan(params, topology, cluster_name, region, repo)
    reporter.step(plan.sentence())
    result = RestoreResult(plan=plan, dry_run=params.dry_run)
    if params.dry_run:
        return result
    if params.require_approval:
        run.approve([plan.sentence()], f"restore {plan.node}")
        # An approval may take an hour: what it approved must still be what would happen.
        again = _plan(params, topology, cluster_name, region, repo)
        changed = _what_changed(plan, again)
        if changed:
            raise run.refuse(
                f"the cluster changed while the restore waited for approval ({'; '.join(changed)}); "
                "start a new restore to approve the new plan"
            )
        plan = result.plan = again
    run.changed = True

    started = time.monotonic()
    primary_info = conninfo_for(cluster, cluster.nodes[plan.primary], dbname="postgres") if plan.primary else None

    def done(phases: list[Phase]) -> None:
        for phase in phases:
            result.phases.append(phase)
            reporter.step(phase.sentence(), slack=False)

    # 0. Nodes confirmed down can never start as a second primary beside the restored one.
    for node in params.confirmed_down if plan.role == "primary" else []:
        reporter.step(_fence_confirmed_down(topology, cluster_name, node))

    # 1. On the node's host: restore beside its data and prove it; a failure removes only the staging copy.
    staged = rt.stage(
        topology,
        cluster_name,
        StageRequest(
            plan=plan,
            start_timeout_seconds=params.start_timeout_seconds,
            recovery_timeout_seconds=params.recovery_timeout_seconds,
        ),
    )
    done(staged.phases)
    result.tables = staged.tables
    result.verified_at = time.monotonic() - started
    reporter.step(
        f"verified the restored copy of backup {plan.label} beside {plan.data_dir}; "
        "the old directory is untouched so far"
    )

    # 2. The replica's slot on the primary (SQL), then on the node's host: swap, role, start;
    #    the step swaps back itself when any of that fails.
    if plan.role == "replica":
        assert primary_info is not None  # a replica's plan names the primary it streams from
        rt.ensure_slot(primary_info, slot_name(plan.node))
    activated = rt.activate(
        topology,
        cluster_name,
        ActivateRequest(
            plan=plan,
            original_hba=staged.original_hba,
            start_timeout_seconds=params.start_timeout_seconds,
            keep_old=params.keep_old,
        ),
    )
    result.activation = activated.activation
    # The swap was done before the phases that followed it (role, start) on the node's host.
    result.swapped_at = time.monotonic() - started - sum(p.seconds for p in activated.phases)
    reporter.step(activated.activation.sentence())
    done(activated.phases)

    # 3. A restored primary is the cluster's writer: its old fence (about data now replaced) goes,
    #    and the writer record moves to it.
    if plan.role == "primary":
        cleared = clear_fence(
            topology,
            cluster_name,
            plan.node,
            current_fencer(topology, "restore"),
            f"restored from backup {plan.label} as the primary",
        )
        if cleared is not None:
            reporter.step(f"cleared {plan.node}'s fence: its data was replaced by the restore", slack=False)
        reporter.step(switch_writer(topology, cluster_name, plan.node).sentence())
    result.cleanup = activated.cleanup
    reporter.step(result.cleanup)
    return result


def _fence_confirmed_down(topology: Topology, cluster_name: str, node: str) -> str:
    """Fence a node the operator confirmed down: read-only on its disk when reachable, and on record always."""
    try:
        on_disk = block_primary_start(topology, cluster_name, node).sentence()
    except RunbookError as exc:
        on_disk = f"its disk could not be reached ({exc})"
    record = mark_fenced(
        topology,
        FenceMarker(
            cluster=cluster_name,
            node=node,
            stopped=True,
            reason="confirmed down by the operator before a restore made another node the primary",
            by=current_fencer(topology, "restore"),
        ),
    )
    return f"fenced {node} (confirmed down): {on_disk}; {'recorded' if record.created else 'already fenced'}"
