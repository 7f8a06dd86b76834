"""Restore tasks: node-local steps of restore verification and of a real restore.

Each touches a data directory, so in production it runs on the node's (or the
verification host's) own worker; in the lab everything is local and runs inline.
None is retried: a half-unpacked directory is torn down and the run reports why.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from regionops.backup import restore as real
from regionops.backup import scratch
from regionops.backup.manifest import BackupManifest
from regionops.drivers.backupsql import BackupSql, RecoveryState
from regionops.drivers.objectstore import objectstore_for
from regionops.drivers.postgres import ConnInfo, SqlNode
from regionops.topology import Topology
from regionops.waiting import poll_until


@task(name="prepare directory", cache_policy=NO_CACHE)
def prepare_dir(path: str, os_user: str | None) -> scratch.Phase:
    """An empty directory the PostgreSQL OS user owns."""
    return scratch.prepare_empty_dir(Path(path), os_user)


@task(name="download and unpack", cache_policy=NO_CACHE)
def fetch_and_unpack(
    topology: Topology, bucket: str, manifest: BackupManifest, kind: str, target: str, os_user: str | None
) -> scratch.Phase:
    """Stream the backup's objects from S3 into tar, checking every sha256."""
    return scratch.fetch_and_unpack(objectstore_for(topology), bucket, manifest, kind, Path(target), os_user)


@task(name="pg_verifybackup", cache_policy=NO_CACHE)
def verify_pg_backup(data_dir: str, manifest: BackupManifest, os_user: str | None) -> scratch.Phase:
    """pg_verifybackup against the backup_manifest in the archive."""
    return scratch.verify_pg_backup(Path(data_dir), manifest, os_user)


@task(name="configure restored instance", cache_policy=NO_CACHE)
def configure_instance(
    topology: Topology, cluster: str, data_dir: str, manifest: BackupManifest, name: str, port: int
) -> scratch.Phase:
    """Loopback port, private pg_hba, recovery to the backup's target."""
    c = topology.clusters[cluster]
    return scratch.configure_instance(Path(data_dir), manifest, name=name, port=port, cluster=c, os_user=c.os_user)


@task(name="start restored instance", cache_policy=NO_CACHE)
def start_instance(data_dir: str, log_file: str, os_user: str | None, timeout: int) -> scratch.Phase:
    """pg_ctl start -w on the restored directory."""
    return scratch.start_instance(Path(data_dir), Path(log_file), os_user, timeout)


@task(name="wait for recovery target", cache_policy=NO_CACHE)
def wait_at_target(info: ConnInfo, manifest: BackupManifest, timeout: float) -> tuple[scratch.Phase, RecoveryState]:
    """Recovery paused exactly at the backup's target."""
    return scratch.wait_at_target(info, manifest, timeout)


@task(name="compare fingerprint", cache_policy=NO_CACHE)
def check_fingerprint(info: ConnInfo, manifest: BackupManifest) -> tuple[scratch.Phase, list[scratch.TableCheck]]:
    """Row counts and checksums of the restored tables against the manifest."""
    return scratch.check_fingerprint(info, manifest)


@task(name="tear down", cache_policy=NO_CACHE)
def remove_dir(path: str, os_user: str | None) -> scratch.Phase:
    """Stop the instance on ``path`` and delete it."""
    return scratch.remove_dir(Path(path), os_user)


@task(name="promote restored instance", cache_policy=NO_CACHE)
def promote(info: ConnInfo, timeout: float = 60) -> str:
    """End recovery at the target (a restored primary gets a new timeline)."""
    sql = BackupSql(info)
    sql.end_recovery()
    poll_until(lambda: not sql.recovery_state().in_recovery, timeout=timeout, interval=0.2,
               what="the restored instance to leave recovery")
    return "ended recovery at the target: the restored instance is a primary on a new timeline"


@task(name="stop restored instance", cache_policy=NO_CACHE)
def stop_instance(data_dir: str, os_user: str | None) -> bool:
    """pg_ctl stop -m fast (a clean shutdown, so the swapped directory starts without crash recovery)."""
    return scratch.stop_instance(Path(data_dir), os_user, mode="fast")


@task(name="swap directories", cache_policy=NO_CACHE)
def swap_in(plan: real.RestorePlan, os_user: str | None) -> real.Activation:
    """Stop the node, move its old data aside, move the verified data in."""
    return real.swap_in(plan, os_user)


@task(name="configure node role", cache_policy=NO_CACHE)
def configure_role(plan: real.RestorePlan, topology: Topology, original_hba: str | None) -> scratch.Phase:
    """The node's own settings and its role (standby settings as the node seam writes them)."""
    return real.configure_role(plan, topology, original_hba)


@task(name="ensure replication slot", cache_policy=NO_CACHE)
def ensure_slot(primary_info: ConnInfo, slot: str) -> bool:
    """The restored replica's slot on the primary (created when missing)."""
    return SqlNode(primary_info).ensure_slot(slot)


@task(name="start node", cache_policy=NO_CACHE)
def start_node(plan: real.RestorePlan, topology: Topology, timeout: float) -> scratch.Phase:
    """Start the node and wait until it plays its role."""
    return real.start_node(plan, topology, timeout)


@task(name="swap back", cache_policy=NO_CACHE)
def swap_back(plan: real.RestorePlan, activation: real.Activation | None, os_user: str | None,
              restart_old: bool) -> str:
    """Undo the swap after a failure."""
    return real.swap_back(plan, activation, os_user, restart_old)


@task(name="remove old data", cache_policy=NO_CACHE)
def remove_old(plan: real.RestorePlan, activation: real.Activation) -> str:
    """Delete the old data directory once the node runs from the new one."""
    return real.remove_old(plan, activation)
