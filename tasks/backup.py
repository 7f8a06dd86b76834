"""Backup tasks: each calls one library function of :mod:`regionops.backup` and carries the retry policy.

Backups are never cached (state changes under them) and taking one is not retried
automatically: a failed backup cleans up after itself, and a second full read of the
database is a decision for the schedule or a human, not for a retry loop.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from regionops.backup import catalog
from regionops.backup.copy import CopyResult, copy_backup
from regionops.backup.manifest import BackupManifest, Verification, human_bytes
from regionops.backup.take import BackupOptions, BackupProgress, take_backup
from regionops.drivers.objectstore import objectstore_for
from regionops.runbook.progress import ProgressArtifact
from regionops.topology import Topology
from tasks.common import TRANSIENT_RETRIES


@task(name="list backups", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def list_backups(topology: Topology, cluster: str, region: str, grace_seconds: float = 600) -> list[catalog.BackupEntry]:
    """Every backup prefix of the cluster in the region's bucket, with its state."""
    return catalog.list_backups(objectstore_for(topology), topology.regions[region].bucket, cluster,
                                grace_seconds=grace_seconds)


@task(name="find backup", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def find_backup(topology: Topology, cluster: str, region: str, backup_id: str | None) -> catalog.BackupEntry:
    """A complete backup: the one named, or the newest."""
    return catalog.find_backup(objectstore_for(topology), topology.regions[region].bucket, cluster, backup_id)


@task(name="clean up interrupted backups", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def cleanup_orphans(
    topology: Topology, cluster: str, region: str, grace_seconds: float, dry_run: bool
) -> catalog.OrphanCleanup:
    """Remove backups whose heartbeat went stale, and their unfinished uploads."""
    return catalog.cleanup_orphans(objectstore_for(topology), topology.regions[region].bucket, cluster,
                                   grace_seconds=grace_seconds, dry_run=dry_run)


@task(name="take backup", cache_policy=NO_CACHE)
def take(
    topology: Topology, cluster: str, source: str, region: str, primary: str | None, options: BackupOptions
) -> BackupManifest:
    """pg_basebackup of ``source`` streamed into the region's bucket, with a progress artifact."""
    progress = ProgressArtifact(f"backup-{cluster}-progress", f"backup of {cluster} from {source}")

    def show(p: BackupProgress) -> None:
        progress.update(p.fraction, f"backup of {cluster} from {source}: {p.streamed_kb // 1024} MiB read, "
                                    f"{human_bytes(p.uploaded_bytes)} uploaded")

    manifest = take_backup(topology, cluster, source=source, region=region, primary=primary, options=options,
                           store=objectstore_for(topology), on_progress=show)
    progress.update(1.0, manifest.sentence(), force=True)
    return manifest


@task(name="copy backup", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def copy(topology: Topology, cluster: str, manifest: BackupManifest, source_region: str, target_region: str) -> CopyResult:
    """Copy a backup to another region's bucket (residency checked first) and verify it there."""
    return copy_backup(topology, cluster, manifest, source_bucket=topology.regions[source_region].bucket,
                       target_region=target_region, store=objectstore_for(topology))


@task(name="delete backups", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def delete_backups(topology: Topology, cluster: str, region: str, backup_ids: list[str]) -> list[str]:
    """Delete whole backups (manifest first); returns the ids deleted."""
    store = objectstore_for(topology)
    for backup_id in backup_ids:
        catalog.delete_backup(store, topology.regions[region].bucket, cluster, backup_id)
    return backup_ids


@task(name="record verification", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def record_verification(topology: Topology, cluster: str, region: str, verification: Verification) -> None:
    """Write the verification verdict beside the backup (retention reads it)."""
    catalog.write_verification(objectstore_for(topology), topology.regions[region].bucket, cluster, verification)
