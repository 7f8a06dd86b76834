"""Runbook: restore a backup onto a node, for real.

For rebuilding a lost replica, or a new primary after total loss.  The backup is
restored *beside* the node's data directory, proven exactly as restore verification
proves it (checksums, pg_verifybackup, recovery to the fingerprint point, data
fingerprint), and only then swapped in; the old directory is kept until the node
runs from the new one, and a failure after the swap swaps back.  Takes the cluster's
change lock; ``dry_run`` plans, ``require_approval`` pauses for a typed approval first.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from regionops.backup.manifest import home_region
from regionops.backup.restore import Activation, RestorePlan, plan_restore
from regionops.backup.scratch import Phase, TableCheck, free_port
from regionops.drivers.pgconf import slot_name
from regionops.drivers.postgres import ConnInfo, conninfo_for
from regionops.errors import PreconditionFailed
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
    if cluster.node_operator == "regional":
        # Unpack, verify and swap still run where this flow runs, not on the node's regional
        # worker: on separate hosts that is another machine's disk.  Refuse before any change.
        raise PreconditionFailed(
            f"restore onto {params.node}: cluster {cluster_name} runs node steps on regional workers "
            f"(node_operator: regional), and restore's disk steps do not go through them yet; run the restore "
            f"on {params.node}'s own host with a topology that says node_operator: local. Nothing was changed")
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
    plan = plan_restore(topology, cluster_name, params.node, manifest, bucket, states, params.role)
    reporter.step(plan.sentence())
    result = RestoreResult(plan=plan, dry_run=params.dry_run)
    if params.dry_run:
        return result
    if params.require_approval:
        request_approval(reporter, [plan.sentence()], f"restore {plan.node}", params.approval_timeout_seconds)

    started = time.monotonic()
    os_user = cluster.os_user
    primary_info = conninfo_for(cluster, cluster.nodes[plan.primary], dbname="postgres") if plan.primary else None
    staging = Path(plan.staging_dir)
    port = free_port()
    info = ConnInfo("127.0.0.1", port, cluster.database, cluster.user,
                    cluster.password.resolve() if cluster.password else None)

    def done(phase: Phase) -> None:
        result.phases.append(phase)
        reporter.step(phase.sentence(), slack=False)

    with cluster_lock(cluster_name, "restore", wait_seconds=params.lock_wait_seconds):
        # 1. Restore beside the node's data and prove it; any failure removes only the staging copy.
        try:
            done(rt.prepare_dir(str(staging), os_user))
            done(rt.fetch_and_unpack(topology, bucket, manifest, "base", str(staging), os_user))
            done(rt.verify_pg_backup(str(staging), manifest, os_user))
            original_hba = (staging / "pg_hba.conf").read_text()
            done(rt.fetch_and_unpack(topology, bucket, manifest, "wal", str(staging), os_user))
            done(rt.configure_instance(topology, cluster_name, str(staging), manifest, f"restore-{params.node}", port))
            done(rt.start_instance(str(staging), f"{staging}.log", os_user, params.start_timeout_seconds))
            phase, _ = rt.wait_at_target(info, manifest, params.recovery_timeout_seconds)
            done(phase)
            phase, result.tables = rt.check_fingerprint(info, manifest)
            done(phase)
            result.verified_at = time.monotonic() - started
            reporter.step(f"verified the restored copy of backup {manifest.backup_id} beside {plan.data_dir}; "
                          "the old directory is untouched so far")
            if plan.role == "primary":
                reporter.step(rt.promote(info))
            rt.stop_instance(str(staging), os_user)
        except BaseException:
            rt.remove_dir(str(staging), os_user)
            raise

        # 2. Swap, give the node its role, start it; swap back if any of that fails.
        activation: Activation | None = None
        try:
            activation = rt.swap_in(plan, os_user)
            result.activation = activation
            result.swapped_at = time.monotonic() - started
            reporter.step(activation.sentence())
            if plan.role == "replica":
                rt.ensure_slot(primary_info, slot_name(plan.node))
            done(rt.configure_role(plan, topology, original_hba))
            done(rt.start_node(plan, topology, params.start_timeout_seconds))
        except BaseException as exc:
            get_run_logger().error("restore of %s failed after the swap: %s", plan.node, exc)
            reporter.step(rt.swap_back(plan, activation, os_user, plan.node_running))
            raise
    result.cleanup = activation.sentence() if params.keep_old else rt.remove_old(plan, activation)
    reporter.step(result.cleanup)
    return result
