"""Runbook: restore a backup onto a node, for real.

For rebuilding a lost replica, or a new primary after total loss.  The backup is
restored *beside* the node's data directory, proven exactly as restore verification
proves it (checksums, pg_verifybackup, recovery to the fingerprint point, data
fingerprint), and only then swapped in; the old directory is kept until the node
runs from the new one, and a failure after the swap swaps back.  Takes the cluster's
change lock; ``dry_run`` plans, ``require_approval`` pauses for a typed approval first.

Every step that touches the node's disk goes through the node seam (three steps: read
the disk facts the plan needs, stage and verify, swap in and start): inline on a single
machine, or, for a cluster with ``node_operator: regional``, as child runs of the
node-operation deployment on the node's region pool, where the node's disk is.
"""

from __future__ import annotations

import time
from typing import Literal

from prefect import flow
from pydantic import BaseModel, Field

from regionops.backup.manifest import home_region
from regionops.backup.restore import plan_restore
from regionops.backup.restore_model import Activation, ActivateRequest, Phase, RestorePlan, StageRequest, TableCheck
from regionops.drivers.pgconf import slot_name
from regionops.drivers.postgres import conninfo_for
from regionops.runbook.approval import request_approval
from regionops.runbook.context import CHANGE_HOOKS
from regionops.runbook.locks import cluster_lock
from regionops.runbook.params import ClusterChangeParams
from regionops.runbook.reporting import RunReporter
from regionops.topology import load_topology
from tasks import backup as bt
from tasks import restore as rt
from tasks.observe import observe_node


class RestoreParams(ClusterChangeParams):
    """Parameters of the restore runbook (rendered as a form in the Prefect UI)."""

    cluster: str | None = Field(None, description="Cluster of the node; default the topology's only cluster")
    node: str = Field(description="Node to restore onto (its data directory is replaced only after verification)")
    backup_id: str | None = Field(None, description="Backup to restore; default the newest complete one")
    region: str | None = Field(None, description="Region whose bucket to restore from; default the cluster's home region")
    role: Literal["auto", "replica", "primary"] = Field(
        "auto", description="replica: stream from the current primary; primary: a new primary (no other may run); "
                            "auto: replica when a primary runs, else primary")
    keep_old: bool = Field(False, description="Keep the old data directory after success (as <data_dir>.pre-restore-<id>)")
    require_approval: bool = Field(
        True, description="Pause for a typed approval in the UI (approver, reason, confirmation phrase) "
                          "before the first change")
    approval_timeout_seconds: int = Field(3600, gt=0, description="How long to wait for the approval")
    lock_wait_seconds: float = Field(
        30, ge=0, description="How long to wait for another runbook to release the cluster before refusing")
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
            f"restored backup {self.plan.backup_id} onto {self.plan.node} as {self.plan.role}, verified "
            f"before the swap ({rows or 'no fingerprint'}); {self.cleanup or ''}".rstrip("; ")
        )


@flow(name="restore", **CHANGE_HOOKS)
def restore(params: RestoreParams) -> RestoreResult:
    """Restore a backup onto a node: beside its data, verified, then swapped in."""
    topology = load_topology(params.topology)
    cluster_name, cluster = topology.cluster(params.cluster)
    topology.node(cluster_name, params.node)  # fail early, naming the node, when it is unknown
    region = params.region or home_region(topology, cluster)
    bucket = topology.regions[region].bucket
    reporter = RunReporter(topology, "restore", f"Restore of {params.node} ({cluster_name})", slack=params.notify)
    reporter.start([f"node {params.node}, backup {params.backup_id or 'newest'} from {bucket}"
                    + (" (dry run)" if params.dry_run else "")])
    try:
        result = _run(params, topology, cluster_name, cluster, region, bucket, reporter)
    except Exception as exc:
        reporter.fail(exc)
        raise
    reporter.finish(
        "dry run" if params.dry_run else "succeeded", [result.sentence()],
        tables={"phases": [{"phase": p.phase, "seconds": round(p.seconds, 2), "detail": p.detail}
                           for p in result.phases]},
    )
    return result


def _run(params, topology, cluster_name, cluster, region, bucket, reporter: RunReporter) -> RestoreResult:
    entry = bt.find_backup(topology, cluster_name, region, params.backup_id)
    manifest = entry.manifest
    states = {n: f.result() for n, f in {n: observe_node.submit(topology, cluster_name, n)
                                         for n in cluster.nodes}.items()}
    # The node's disk (free space, running, holds data) is read on the node's host: a node step.
    disk = rt.restore_facts(topology, cluster_name, params.node)
    plan = plan_restore(topology, cluster_name, params.node, manifest, bucket, states, disk, params.role)
    reporter.step(plan.sentence())
    result = RestoreResult(plan=plan, dry_run=params.dry_run)
    if params.dry_run:
        return result
    if params.require_approval:
        request_approval(reporter, [plan.sentence()], f"restore {plan.node}", params.approval_timeout_seconds)

    started = time.monotonic()
    primary_info = conninfo_for(cluster, cluster.nodes[plan.primary], dbname="postgres") if plan.primary else None

    def done(phases: list[Phase]) -> None:
        for phase in phases:
            result.phases.append(phase)
            reporter.step(phase.sentence(), slack=False)

    with cluster_lock(cluster_name, "restore", wait_seconds=params.lock_wait_seconds):
        # 1. On the node's host: restore beside its data and prove it; a failure removes only the staging copy.
        staged = rt.stage(topology, cluster_name, StageRequest(
            plan=plan, manifest=manifest, start_timeout_seconds=params.start_timeout_seconds,
            recovery_timeout_seconds=params.recovery_timeout_seconds))
        done(staged.phases)
        result.tables = staged.tables
        result.verified_at = time.monotonic() - started
        reporter.step(f"verified the restored copy of backup {manifest.backup_id} beside {plan.data_dir}; "
                      "the old directory is untouched so far")

        # 2. The replica's slot on the primary (SQL), then on the node's host: swap, role, start;
        #    the step swaps back itself when any of that fails.
        if plan.role == "replica":
            rt.ensure_slot(primary_info, slot_name(plan.node))
        activated = rt.activate(topology, cluster_name, ActivateRequest(
            plan=plan, original_hba=staged.original_hba, start_timeout_seconds=params.start_timeout_seconds,
            keep_old=params.keep_old))
    result.activation = activated.activation
    # The swap was done before the phases that followed it (role, start) on the node's host.
    result.swapped_at = time.monotonic() - started - sum(p.seconds for p in activated.phases)
    reporter.step(activated.activation.sentence())
    done(activated.phases)
    result.cleanup = activated.cleanup
    reporter.step(result.cleanup)
    return result
