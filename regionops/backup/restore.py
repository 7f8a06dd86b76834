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
from regionops.backup.scratch import Phase, TableCheck, stop_instance
from regionops.drivers.pgconf import (
    clear_recovery_target,
    configure_standby,
    set_auto_conf,
    slot_name,
    write_node_settings,
)
from regionops.drivers.pgtools import PgCtl, chown_to
from regionops.drivers.postgres import NodeState, SqlObserver, conninfo_for
from regionops.errors import PreconditionFailed, TransientError, VerificationFailed
from regionops.node.local import replication_conninfo, server_log
from regionops.topology import Topology
from regionops.waiting import poll_until

Role = Literal["replica", "primary"]


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


class RestorePlan(BaseModel):
    """What a restore onto a node will do, decided before anything changes."""

    cluster: str
    node: str
    backup_id: str
    bucket: str
    role: Role
    primary: str | None
    data_dir: str
    staging_dir: str
    old_dir: str
    node_running: bool
    node_has_data: bool
    needed_bytes: int
    free_bytes: int

    def sentence(self) -> str:
        """One line for the report and the approval form."""
        keep = f"keeping the old directory as {self.old_dir} until the node runs" if self.node_has_data \
            else "no old data to keep"
        upstream = f", streaming from {self.primary}" if self.role == "replica" else ""
        return (
            f"restore backup {self.backup_id} onto {self.node} as {self.role}{upstream}: unpack into "
            f"{self.staging_dir}, verify, then swap into {self.data_dir} ({keep}); "
            f"needs about {human_bytes(self.needed_bytes)}, {human_bytes(self.free_bytes)} free"
        )


def plan_restore(
    topology: Topology,
    cluster_name: str,
    node: str,
    manifest: BackupManifest,
    bucket: str,
    states: dict[str, NodeState],
    role: Literal["auto", "replica", "primary"] = "auto",
    free_bytes: int | None = None,
) -> RestorePlan:
    """Decide role and paths, and refuse what would be unsafe.  Changes nothing."""
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
    free = free_bytes if free_bytes is not None else shutil.disk_usage(parent if parent.exists() else "/").free
    needed = int(manifest.size_before * 1.1)
    if needed > free:
        raise PreconditionFailed(
            f"{parent} has {human_bytes(free)} free; restoring backup {manifest.backup_id} needs about "
            f"{human_bytes(needed)}"
        )
    staging = Path(f"{data_dir}.restore-{manifest.backup_id}")
    has_data = data_dir.exists() and any(data_dir.iterdir())
    running = (data_dir / "postmaster.pid").exists() and PgCtl(data_dir, cluster.os_user).is_running()
    return RestorePlan(
        cluster=cluster_name, node=node, backup_id=manifest.backup_id, bucket=bucket, role=role, primary=primary,
        data_dir=str(data_dir), staging_dir=str(staging), old_dir=f"{data_dir}.pre-restore-{manifest.backup_id}",
        node_running=running, node_has_data=has_data, needed_bytes=needed, free_bytes=free,
    )


class Activation(BaseModel):
    """The swap: the verified directory became the node's, the old one moved aside."""

    node: str
    data_dir: str
    old_dir: str | None
    stopped_old: bool
    seconds: float

    def sentence(self) -> str:
        """One line for the report."""
        old = f"old data kept at {self.old_dir}" if self.old_dir else "there was no old data"
        stopped = "stopped the old server, " if self.stopped_old else ""
        return f"{stopped}swapped the verified data into {self.data_dir} for {self.node}; {old}"


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
