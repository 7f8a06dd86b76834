"""Results of restore verification, and the real restore onto a node: plan, swap, roll back.

A real restore never writes into the node's data directory.  It restores *beside* it
(``<data_dir>.restore-<backup_id>``), proves the copy exactly as restore verification
does, and only then swaps directories: the old one is renamed aside
(``<data_dir>.pre-restore-<backup_id>``) and kept until the node runs from the new one.
A failure after the swap swaps back.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from regionops.backup.manifest import BackupManifest, human_bytes
from regionops.backup.restore_model import (
    Activation,
    ActivatedRestore,
    ActivateRequest,
    RestoreDiskFacts,
    RestorePlan,
    StagedRestore,
    StageRequest,
)
from regionops.backup import scratch
from regionops.backup.scratch import Phase, TableCheck, stop_instance
from regionops.drivers.backupsql import BackupSql
from regionops.drivers.objectstore import objectstore_for
from regionops.drivers.pgconf import (
    clear_recovery_target,
    configure_standby,
    set_auto_conf,
    slot_name,
    write_node_settings,
)
from regionops.drivers.pgtools import PgCtl, chown_to
from regionops.drivers.postgres import ConnInfo, NodeState, SqlObserver, conninfo_for
from regionops.errors import PreconditionFailed, TransientError, VerificationFailed
from regionops.node.local import replication_conninfo, server_log
from regionops.topology import Topology
from regionops.waiting import poll_until

class RestoreVerification(BaseModel):
    """The outcome of a restore verification: phases, times and what the data looked like."""

    backup_id: str
    cluster: str
    bucket: str
    passed: bool
    phases: list[Phase]
    restore_seconds: float
    total_seconds: float
    tables: list[TableCheck] = []
    error: str | None = None

    def sentence(self) -> str:
        """'backup … of core restored and verified in 8.2 s (total 9.0 s): public.app_events 5000 rows match'."""
        if not self.passed:
            return f"restore verification of backup {self.backup_id} of {self.cluster} FAILED: {self.error}"
        data = "; ".join(f"{t.table} {t.restored_rows} rows match" for t in self.tables) or "no fingerprint tables"
        return (
            f"backup {self.backup_id} of {self.cluster} restored and verified: restore time "
            f"{self.restore_seconds:.1f} s (total {self.total_seconds:.1f} s); {data}"
        )


def plan_restore(
    topology: Topology,
    cluster_name: str,
    node: str,
    manifest: BackupManifest,
    bucket: str,
    states: dict[str, NodeState],
    disk: RestoreDiskFacts,
    role: Literal["auto", "replica", "primary"] = "auto",
) -> RestorePlan:
    """Decide role and paths, and refuse what would be unsafe.  Changes nothing.

    ``disk`` is what the node's host read from its disk (:func:`disk_facts`, run through
    the node seam): free space beside the data directory, whether it runs, whether it holds data.
    """
    _, cluster = topology.cluster(cluster_name)
    target = topology.node(cluster_name, node)
    state = states.get(node)
    primaries = [n for n, s in states.items() if s.reachable and s.role == "primary" and n != node]
    if state is not None and state.reachable and state.role == "primary":
        raise PreconditionFailed(
            f"{node} is the running primary of {cluster_name}; restoring over it would take the cluster's writer "
            "down. Fail over or stop it first"
        )
    if role == "auto":
        role = "replica" if primaries else "primary"
    primary = primaries[0] if primaries else None
    if role == "replica":
        if primary is None:
            raise PreconditionFailed(f"cannot restore {node} as a replica: {cluster_name} has no reachable primary")
        sysid = states[primary].system_identifier
        if sysid and sysid != manifest.system_identifier:
            raise PreconditionFailed(
                f"backup {manifest.backup_id} is of system {manifest.system_identifier}, but primary {primary} is "
                f"system {sysid}: a replica restored from it could never stream"
            )
    elif primaries:
        raise PreconditionFailed(
            f"cannot restore {node} as a primary while {primaries[0]} is a reachable primary (split brain)"
        )
    data_dir = Path(target.data_dir)
    parent = data_dir.parent
    free = disk.free_bytes
    needed = int(manifest.size_before * 1.1)
    if needed > free:
        raise PreconditionFailed(
            f"{parent} has {human_bytes(free)} free; restoring backup {manifest.backup_id} needs about "
            f"{human_bytes(needed)}"
        )
    staging = Path(f"{data_dir}.restore-{manifest.backup_id}")
    has_data, running = disk.has_data, disk.running
    return RestorePlan(
        cluster=cluster_name, node=node, backup_id=manifest.backup_id, bucket=bucket, role=role, primary=primary,
        data_dir=str(data_dir), staging_dir=str(staging), old_dir=f"{data_dir}.pre-restore-{manifest.backup_id}",
        node_running=running, node_has_data=has_data, needed_bytes=needed, free_bytes=free,
    )


def disk_facts(topology: Topology, cluster_name: str, node: str) -> RestoreDiskFacts:
    """Read, on the node's host, what :func:`plan_restore` needs from the node's disk.  Changes nothing."""
    _, cluster = topology.cluster(cluster_name)
    data_dir = Path(topology.node(cluster_name, node).data_dir)
    parent = data_dir.parent
    free = shutil.disk_usage(parent if parent.exists() else "/").free
    has_data = data_dir.exists() and any(data_dir.iterdir())
    running = (data_dir / "postmaster.pid").exists() and PgCtl(data_dir, cluster.os_user).is_running()
    return RestoreDiskFacts(node=node, data_dir=str(data_dir), free_bytes=free, running=running, has_data=has_data)


def stage(topology: Topology, request: StageRequest) -> StagedRestore:
    """On the node's host: restore the backup beside the node's data, start it on a loopback port, prove it.

    The staging directory must be new or empty (a restore never writes into a used
    directory); any failure removes only the staging copy, so the node's own data
    directory is never touched here.  A restore as primary ends recovery at the target.
    """
    plan, manifest = request.plan, request.manifest
    _, cluster = topology.cluster(plan.cluster)
    os_user = cluster.os_user
    staging = Path(plan.staging_dir)
    port = scratch.free_port()  # free on THIS host, where the staging instance runs
    info = ConnInfo(scratch.LOOPBACK, port, cluster.database, cluster.user,
                    cluster.password.resolve() if cluster.password else None)
    store = objectstore_for(topology)
    phases: list[Phase] = []
    try:
        phases.append(scratch.prepare_empty_dir(staging, os_user))
        phases.append(scratch.fetch_and_unpack(store, plan.bucket, manifest, "base", staging, os_user))
        phases.append(scratch.verify_pg_backup(staging, manifest, os_user))
        original_hba = (staging / "pg_hba.conf").read_text()
        phases.append(scratch.fetch_and_unpack(store, plan.bucket, manifest, "wal", staging, os_user))
        phases.append(scratch.configure_instance(staging, manifest, name=f"restore-{plan.node}", port=port,
                                                 cluster=cluster, os_user=os_user))
        phases.append(scratch.start_instance(staging, Path(f"{staging}.log"), os_user,
                                             request.start_timeout_seconds))
        phase, _ = scratch.wait_at_target(info, manifest, request.recovery_timeout_seconds)
        phases.append(phase)
        phase, tables = scratch.check_fingerprint(info, manifest)
        phases.append(phase)
        if plan.role == "primary":
            started = time.monotonic()
            sql = BackupSql(info)
            sql.end_recovery()
            poll_until(lambda: not sql.recovery_state().in_recovery, timeout=60, interval=0.2,
                       what="the restored instance to leave recovery")
            phases.append(Phase(phase="promote", seconds=time.monotonic() - started,
                                detail="ended recovery at the target: a primary on a new timeline"))
        stop_instance(staging, os_user, mode="fast")  # clean, so the swapped directory needs no crash recovery
    except BaseException:
        scratch.remove_dir(staging, os_user)
        raise
    return StagedRestore(node=plan.node, staging_dir=str(staging), phases=phases, tables=tables,
                         original_hba=original_hba, promoted=plan.role == "primary")


def activate(topology: Topology, request: ActivateRequest) -> ActivatedRestore:
    """On the node's host: swap the verified copy in, give it the node's role, start it; swap back on failure.

    The old data directory is kept aside until the node runs from the new one, then
    removed unless ``keep_old``.
    """
    plan = request.plan
    _, cluster = topology.cluster(plan.cluster)
    activation: Activation | None = None
    phases: list[Phase] = []
    try:
        activation = swap_in(plan, cluster.os_user)
        phases.append(configure_role(plan, topology, request.original_hba))
        phases.append(start_node(plan, topology, request.start_timeout_seconds))
    except Exception as exc:
        # The message travels back from the node's worker: it must say what was undone.
        undone = swap_back(plan, activation, cluster.os_user, plan.node_running)
        raise VerificationFailed(f"restore of {plan.node} failed after the swap: {exc}; {undone}") from exc
    except BaseException:
        swap_back(plan, activation, cluster.os_user, plan.node_running)
        raise
    cleanup = activation.sentence() if request.keep_old else remove_old(plan, activation)
    return ActivatedRestore(activation=activation, phases=phases, cleanup=cleanup)


def swap_in(plan: RestorePlan, os_user: str | None) -> Activation:
    """Stop the node's old server (if it runs) and swap the verified staging directory in."""
    started = time.monotonic()
    data_dir, staging, old = Path(plan.data_dir), Path(plan.staging_dir), Path(plan.old_dir)
    stopped = stop_instance(data_dir, os_user, mode="fast")
    if old.exists():
        raise PreconditionFailed(f"{old} already exists (an earlier restore's old data?); move it away first")
    moved_old = False
    if data_dir.exists():
        os.rename(data_dir, old)  # same parent, same filesystem: atomic
        moved_old = True
    os.rename(staging, data_dir)
    return Activation(node=plan.node, data_dir=str(data_dir), old_dir=str(old) if moved_old else None,
                      stopped_old=stopped, seconds=time.monotonic() - started)


def configure_role(plan: RestorePlan, topology: Topology, original_hba: str | None) -> Phase:
    """Give the swapped-in directory the node's own settings and its role (stopped server).

    The standby settings are the node seam's (the same primary_conninfo and slot a
    re-clone or rewind writes).
    """
    started = time.monotonic()
    _, cluster = topology.cluster(plan.cluster)
    node = topology.node(plan.cluster, plan.node)
    data_dir = Path(plan.data_dir)
    if original_hba is not None:
        (data_dir / "pg_hba.conf").write_text(original_hba)
        chown_to(data_dir / "pg_hba.conf", cluster.os_user)
    clear_recovery_target(data_dir, cluster.os_user)
    write_node_settings(data_dir, node=plan.node, host=node.host, port=node.port, os_user=cluster.os_user)
    # The staging instance's port and name overrides must not outlive it.
    set_auto_conf(data_dir, {"port": None, "listen_addresses": None, "cluster_name": None,
                             "unix_socket_directories": None, "archive_mode": None, "hot_standby": None}, cluster.os_user)
    if plan.role == "replica":
        assert plan.primary is not None
        configure_standby(data_dir, primary_conninfo=replication_conninfo(cluster, plan.primary, plan.node),
                          slot=slot_name(plan.node), os_user=cluster.os_user)
    return Phase(phase="configure role", seconds=time.monotonic() - started,
                 detail=f"{plan.node} settings, port {node.port}, role {plan.role}")


def swap_back(plan: RestorePlan, activation: Activation | None, os_user: str | None, restart_old: bool) -> str:
    """Undo :func:`swap_in` after a failure: the new data aside, the old data back, old server restarted."""
    data_dir, old = Path(plan.data_dir), Path(plan.old_dir)
    failed = Path(f"{plan.data_dir}.failed-restore-{plan.backup_id}")
    try:
        stop_instance(data_dir, os_user, mode="immediate")
    except Exception:  # noqa: BLE001 - best effort: the rename below is what matters
        pass
    if data_dir.exists():
        shutil.rmtree(failed, ignore_errors=True)
        os.rename(data_dir, failed)
    if activation is not None and activation.old_dir and old.exists():
        os.rename(old, data_dir)
        if restart_old:
            PgCtl(data_dir, os_user, node_log(plan)).start()
        return f"swapped back: the old data is in {data_dir} again; the failed restore is in {failed}"
    return f"the failed restore is in {failed}; there was no old data to put back"


def remove_old(plan: RestorePlan, activation: Activation) -> str:
    """Delete the old directory (and the staging instance's log) once the node runs from the restored one."""
    Path(f"{plan.staging_dir}.log").unlink(missing_ok=True)
    if activation.old_dir and Path(activation.old_dir).exists():
        shutil.rmtree(activation.old_dir)
        return f"removed the old data directory {activation.old_dir}"
    return "no old data directory to remove"


def node_log(plan: RestorePlan) -> Path:
    """Where the node's server logs: the node seam's place, so every start of the node logs to one file."""
    return server_log(Path(plan.data_dir), plan.node)


def start_node(plan: RestorePlan, topology: Topology, timeout: float = 120) -> Phase:
    """Start the node from its restored data and wait until it plays its role.

    A replica must be streaming from the primary; a primary must accept writes.
    """
    started = time.monotonic()
    _, cluster = topology.cluster(plan.cluster)
    node = topology.node(plan.cluster, plan.node)
    PgCtl(plan.data_dir, cluster.os_user, node_log(plan)).start(timeout=int(timeout))
    info = conninfo_for(cluster, node)
    observer = SqlObserver(connect_timeout=2)

    def playing_role() -> NodeState | None:
        state = observer.observe(plan.node, info)
        if not state.reachable:
            return None
        if plan.role == "primary":
            return state if state.role == "primary" else None
        streaming = state.role == "replica" and state.wal_receiver and state.wal_receiver.status == "streaming"
        return state if streaming else None

    try:
        state = poll_until(playing_role, timeout=timeout, interval=0.2,
                           what=f"{plan.node} to run as {plan.role}")
    except TransientError as exc:
        tail = " | ".join(node_log(plan).read_text(errors="replace").strip().splitlines()[-3:]) \
            if node_log(plan).exists() else ""
        raise VerificationFailed(f"{plan.node} started from the restored data but {exc}; log: {tail}") from exc
    return Phase(phase="start node", seconds=time.monotonic() - started, detail=state.sentence())
