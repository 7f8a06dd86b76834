"""Restore tasks: the steps of restore verification, and the node seam's steps of a real restore.

Restore verification's steps touch a scratch directory on the host that runs the
flow.  A real restore's disk steps touch the node's data directory, so they go through
the node seam (:mod:`regionops.node`): inline on a single machine, a child run on the
node's region pool otherwise.  None is retried: a half-unpacked directory is torn down
and the run reports why.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from regionops.backup import restore as real
from regionops.backup import scratch
from regionops.backup.manifest import BackupManifest
from regionops.drivers.backupsql import RecoveryState
from regionops.drivers.objectstore import objectstore_for
from regionops.drivers.postgres import ConnInfo, SqlNode
from regionops.node import node_operator_for
from regionops.topology import Topology


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


# -- restore onto a node: its disk steps go through the node seam -------------------------
# (LocalNodeOperator inline on a single machine; RegionalNodeOperator as a child run on the
# node's region pool, where the node's disk is.)  Not retried: a half-done step is undone
# by the step itself, and the run reports why.


@task(name="read restore facts", cache_policy=NO_CACHE)
def restore_facts(topology: Topology, cluster: str, node: str) -> real.RestoreDiskFacts:
    """Free space beside the node's data directory, whether it runs, whether it holds data."""
    return node_operator_for(topology, cluster).restore_facts(node)


@task(name="restore beside the node and verify", cache_policy=NO_CACHE)
def stage(topology: Topology, cluster: str, request: real.StageRequest) -> real.StagedRestore:
    """Download, unpack, pg_verifybackup, start on a loopback port, recover to target, fingerprint."""
    return node_operator_for(topology, cluster).restore_stage(request.plan.node, request)


@task(name="swap in and start", cache_policy=NO_CACHE)
def activate(topology: Topology, cluster: str, request: real.ActivateRequest) -> real.ActivatedRestore:
    """Swap the verified copy in, give the node its role, start it (swapped back on failure)."""
    return node_operator_for(topology, cluster).restore_activate(request.plan.node, request)


@task(name="ensure replication slot", cache_policy=NO_CACHE)
def ensure_slot(primary_info: ConnInfo, slot: str) -> bool:
    """The restored replica's slot on the primary (created when missing): SQL, no host access needed."""
    return SqlNode(primary_info).ensure_slot(slot)
