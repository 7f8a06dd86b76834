"""Runbook: backup.

A physical base backup of a cluster streamed into its home-region bucket, copies to the
regions the topology names (where residency allows: checked before anything moves),
clean-up of interrupted backups, and retention.  Runs nightly; ``dry_run`` shows the
plan, including what retention would delete, and changes nothing.  One backup of a
cluster at a time: a second one waits ``lock_wait_seconds`` for the cluster's backup
lock, then refuses.  (Not the change lock: a failover must never wait for a backup.)
"""

from __future__ import annotations

from datetime import datetime, timezone

from prefect import flow
from pydantic import BaseModel, Field

from regionops.backup.catalog import OrphanCleanup
from regionops.backup.copy import CopyResult
from regionops.backup.manifest import BackupManifest, Compression, CompressOn, home_region, human_bytes
from regionops.backup.residency import check_all
from regionops.backup.retention import RetentionCandidate, RetentionPlan, RetentionPolicy, plan_retention
from regionops.backup.source import SourceChoice, choose_source
from regionops.backup.take import BackupOptions
from regionops.drivers.objectstore import MAX_PARTS, MiB
from regionops.runbook.context import CHANGE_HOOKS, RunbookRun
from regionops.runbook.monitoring import BACKUP_JOB, backup_gauges, publish
from regionops.runbook.params import ClusterChangeParams
from regionops.runbook.reporting import RunReporter
from regionops.topology import Topology, load_topology
from tasks import backup as bt
from tasks.observe import observe_node


class BackupParams(ClusterChangeParams):
    """Parameters of the backup runbook (rendered as a form in the Prefect UI)."""

    cluster: str | None = Field(None, description="Cluster to back up; default the topology's only cluster")
    source: str | None = Field(None, description="Node to back up from; default a healthy replica, else the primary")
    region: str | None = Field(
        None, description="Region whose bucket receives the backup; default the cluster's home region "
                          "(the region of its highest-priority node)")
    compression: Compression = Field("lz4", description="none, gzip, lz4 or zstd")
    compression_level: int | None = Field(None, description="Compression level; default the method's own")
    compress_on: CompressOn = Field(
        "client", description="client: compressed by pg_basebackup here (pg_verifybackup possible); "
                              "server: by PostgreSQL (less network, no pg_verifybackup)")
    max_rate_kbps: int | None = Field(None, ge=32, description="Throttle reading the source (kB/s); default unlimited")
    copy_to: list[str] | None = Field(None, description="Regions to copy the backup to; default the topology's")
    fingerprint_tables: list[str] | None = Field(
        None, description="Tables whose rows prove a restore; default the topology's (keep them small: they are "
                          "locked against writes while counted)")
    keep_last: int | None = Field(None, ge=1, description="Retention: keep the last N; default the topology's")
    max_age_days: float | None = Field(None, gt=0, description="Retention: keep younger than D days; default the topology's")
    prune: bool = Field(True, description="Apply retention after the backup")
    take_backup: bool = Field(True, description="Take a new backup (false: only clean up and apply retention)")
    dry_run: bool = Field(False, description="Plan everything, change nothing (lists what retention would delete)")
    lock_wait_seconds: float = Field(
        60, ge=0, description="How long to wait for another backup of the cluster to finish before refusing")
    orphan_grace_seconds: float = Field(
        600, gt=0, description="An incomplete backup whose heartbeat is older than this was interrupted and is removed")
    part_size_mb: int = Field(16, ge=5, le=5120, description="S3 multipart part size (memory per part)")
    volume_size_gb: float = Field(
        64, gt=0, description="Largest object of the tar stream (at most 10,000 parts); longer streams get more volumes")


class RetentionOutcome(BaseModel):
    """Retention applied (or planned) in one bucket."""

    region: str
    bucket: str
    plan: RetentionPlan
    deleted: list[str]
    dry_run: bool

    def sentence(self) -> str:
        """One line for the report."""
        verb = "would delete" if self.dry_run else "deleted"
        gone = self.plan.delete if self.dry_run else self.deleted
        return (
            f"{self.bucket}: {self.plan.policy.describe()}: kept {len(self.plan.keep)}, {verb} {len(gone)}"
            + (f" ({', '.join(gone)})" if gone else "")
        )


class BackupRunResult(BaseModel):
    """Everything one backup run did (or, in a dry run, would do)."""

    cluster: str
    region: str
    dry_run: bool
    source: SourceChoice | None = None
    manifest: BackupManifest | None = None
    copies: list[CopyResult] = []
    cleanups: list[OrphanCleanup] = []
    retention: list[RetentionOutcome] = []

    def sentence(self) -> str:
        """The run in one line."""
        if self.dry_run:
            source = self.source.node if self.source else "no node"
            return (f"dry run: would back up {self.cluster} from {source} into {self.region}; "
                    + "; ".join(r.sentence() for r in self.retention))
        head = self.manifest.sentence() if self.manifest else f"no new backup of {self.cluster}"
        copies = f", copied to {', '.join(c.region for c in self.copies)}" if self.copies else ""
        pruned = sum(len(r.deleted) for r in self.retention)
        return f"{head}{copies}; retention deleted {pruned} backup(s)"


def _policy(params: BackupParams, keep_last: int | None, max_age_days: float | None) -> RetentionPolicy:
    return RetentionPolicy(
        keep_last=params.keep_last if params.keep_last is not None else keep_last,
        max_age_days=params.max_age_days if params.max_age_days is not None else max_age_days,
    )


@flow(name="backup", **CHANGE_HOOKS)
def backup(params: BackupParams = BackupParams()) -> BackupRunResult:
    """Back up a cluster into its home bucket, copy it where residency allows, prune by policy."""
    topology = load_topology(params.topology)
    cluster_name, cluster = topology.cluster(params.cluster)
    region = params.region or home_region(topology, cluster)
    copy_to = [r for r in (params.copy_to if params.copy_to is not None else cluster.backup.copy_to) if r != region]
    run = RunbookRun(topology, "backup", cluster_name, f"Backup of {cluster_name}", params, lock="backup",
                     start_lines=[f"cluster {cluster_name} into {topology.regions[region].bucket}"
                                  + (" (dry run)" if params.dry_run else "")])
    with run:
        return _report(params, topology, cluster_name, _run(params, topology, cluster_name, cluster, region,
                                                            copy_to, run), run.reporter)


def _report(params: BackupParams, topology: Topology, cluster_name: str, result: BackupRunResult,
            reporter: RunReporter) -> BackupRunResult:
    m = result.manifest
    if m is not None and not params.dry_run:
        publish(topology, BACKUP_JOB, cluster_name, backup_gauges(
            m.finished_at, m.size_after, (m.finished_at - m.started_at).total_seconds()), reporter)
    reporter.finish(
        "dry run" if params.dry_run else "succeeded",
        [result.sentence()],
        tables={
            "objects": [{"key": o.key, "size": human_bytes(o.size), "sha256": o.sha256[:16] + "…"}
                        for o in (m.objects if m else [])],
            "fingerprint": [{"table": t, "rows": f.rows, "checksum": f.checksum}
                            for t, f in (m.fingerprint.items() if m else [])],
            "retention": [{"bucket": r.bucket, "backup": d.backup_id, "keep": d.keep, "why": "; ".join(d.reasons)}
                          for r in result.retention for d in r.plan.decisions],
        },
    )
    return result


def _run(params, topology, cluster_name, cluster, region, copy_to, run: RunbookRun) -> BackupRunResult:
    reporter = run.reporter
    # 1. Residency first: a refused target stops the run before a byte is read or moved.
    check_all(topology, cluster_name, [region, *copy_to], "backup")
    result = BackupRunResult(cluster=cluster_name, region=region, dry_run=params.dry_run)

    # 2. Where to read from: a pure decision over fresh observations.
    states = {n: f.result() for n, f in {n: observe_node.submit(topology, cluster_name, n)
                                         for n in cluster.nodes}.items()}
    primaries = [n for n, s in states.items() if s.reachable and s.role == "primary"]
    if params.take_backup:
        result.source = choose_source(cluster, states, cluster.health, bucket_region=region, requested=params.source)
        reporter.step(result.source.sentence())

    buckets = [region, *copy_to]
    if params.require_approval and not params.dry_run:
        run.approve([f"back up {cluster_name} from {result.source.node if result.source else 'no node'} into "
                     f"{topology.regions[region].bucket}", f"copy it to {', '.join(copy_to) or 'no other region'}",
                     "remove interrupted backups and apply retention in " + ", ".join(buckets)],
                    f"backup {cluster_name}")
    run.changed = not params.dry_run
    # 3. Interrupted backups (stale heartbeat) are removed while the new one is taken:
    #    their prefixes differ, and a running backup's fresh heartbeat keeps it safe.
    cleanups = [bt.cleanup_orphans.submit(topology, cluster_name, r, params.orphan_grace_seconds, params.dry_run)
                for r in buckets]

    # 4. The backup itself, then its copies.
    if params.take_backup and not params.dry_run:
        options = BackupOptions(
            compression=params.compression, compression_level=params.compression_level,
            compress_on=params.compress_on, max_rate_kbps=params.max_rate_kbps,
            part_size=params.part_size_mb * MiB,
            # A volume is a whole number of parts, and S3 allows at most MAX_PARTS of them.
            volume_size=min(MAX_PARTS, max(1, round(params.volume_size_gb * 1024 / params.part_size_mb)))
            * params.part_size_mb * MiB,
            fingerprint_tables=(params.fingerprint_tables if params.fingerprint_tables is not None
                                else cluster.backup.fingerprint_tables),
            heartbeat_seconds=min(15.0, params.orphan_grace_seconds / 4),
        )
        result.manifest = bt.take(topology, cluster_name, result.source.node, region,
                                  primaries[0] if len(primaries) == 1 else None, options)
        reporter.step(result.manifest.sentence())
        if result.manifest.fingerprint_note:
            reporter.step(f"note: {result.manifest.fingerprint_note}")
    for future in cleanups:
        cleanup = future.result()
        result.cleanups.append(cleanup)
        if cleanup.removed or cleanup.left_alone:
            reporter.step(cleanup.sentence())

    if result.manifest is not None:
        for target in copy_to:
            copied = bt.copy(topology, cluster_name, result.manifest, region, target)
            result.copies.append(copied)
            reporter.step(copied.sentence())

    # 5. Retention in every bucket; "verified" comes from the home bucket, where verification runs.
    if params.prune:
        now = datetime.now(timezone.utc)
        policy = _policy(params, cluster.backup.retention.keep_last, cluster.backup.retention.max_age_days)
        home = bt.list_backups(topology, cluster_name, region, params.orphan_grace_seconds)
        verified = {e.backup_id for e in home if e.verified}
        for r in buckets:
            entries = home if r == region else bt.list_backups(topology, cluster_name, r, params.orphan_grace_seconds)
            candidates = [
                RetentionCandidate(backup_id=e.backup_id, finished_at=e.manifest.finished_at,
                                   verified=e.backup_id in verified)
                for e in entries if e.state == "complete" and e.manifest
            ]
            plan = plan_retention(candidates, policy, now)
            deleted = [] if params.dry_run or not plan.delete else bt.delete_backups(
                topology, cluster_name, r, plan.delete)
            outcome = RetentionOutcome(region=r, bucket=topology.regions[r].bucket, plan=plan,
                                       deleted=deleted, dry_run=params.dry_run)
            result.retention.append(outcome)
            reporter.step(outcome.sentence())
    return result
