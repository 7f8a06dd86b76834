"""A real restore's steps on the node's own host: read its disk, stage the copy, swap it in.

A real restore never writes into the node's data directory.  ``pgbackrest restore``
writes into an EMPTY directory beside it (``<data_dir>.restore-<label>``; a used one is
refused), the copy is started on a loopback port, recovers to the target and is
proven, and only then are the directories swapped: the old one is renamed aside
(``<data_dir>.pre-restore-<label>``) and kept until the node runs from the new one.
A failure after the swap swaps back.  The node seam (:mod:`regionops.node.local`) calls
these; the plan they carry comes from :func:`regionops.backup.restore.plan_restore`.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from regionops.backup import scratch
from regionops.backup.scratch import stop_instance
from regionops.drivers import pgbackrest
from regionops.drivers.backupsql import BackupSql
from regionops.drivers.pgconf import (
    ARCHIVE_CONF,
    clear_recovery_target,
    configure_standby,
    set_auto_conf,
    slot_name,
    write_archive_settings,
    write_node_settings,
)
from regionops.drivers.pgtools import PgCtl, chown_to, server_log
from regionops.drivers.postgres import ConnInfo, NodeState, conninfo_for, observer_for, replication_conninfo
from regionops.errors import PreconditionFailed, TransientError, VerificationFailed
from regionops.model.restore import (
    ActivatedRestore,
    ActivateRequest,
    Activation,
    Phase,
    RestoreDiskFacts,
    RestorePlan,
    StagedRestore,
    StageRequest,
)
from regionops.topology import Topology
from regionops.waiting import poll_until


def disk_facts(topology: Topology, cluster_name: str, node: str, repo: int = 1) -> RestoreDiskFacts:
    """Read, on the node's host, what :func:`plan_restore` needs: its disk, and the sets pgBackRest lists."""
    _, cluster = topology.cluster(cluster_name)
    data_dir = Path(topology.node(cluster_name, node).data_dir)
    parent = data_dir.parent
    free = shutil.disk_usage(parent if parent.exists() else "/").free
    has_data = data_dir.exists() and any(data_dir.iterdir())
    running = (data_dir / "postmaster.pid").exists() and PgCtl(data_dir, cluster.os_user).is_running()
    return RestoreDiskFacts(
        node=node,
        data_dir=str(data_dir),
        free_bytes=free,
        running=running,
        has_data=has_data,
        sets=scratch.list_sets(topology, cluster_name, repo),
    )


def work_dir_of(staging: Path) -> Path:
    """The staging copy's pgBackRest configuration, spool and logs, beside it (its restore_command names it)."""
    return staging.with_name(f"{staging.name}.pgbackrest")


def stage(topology: Topology, request: StageRequest) -> StagedRestore:
    """On the node's host: pgbackrest restore beside the node's data, start it on a loopback port, prove it.

    The staging directory must be new or empty: a used one is refused, naming it, and
    left as it was.  Any later failure removes only the staging copy, so the node's own
    data directory is never touched here.  A restore as primary ends recovery at the target.
    """
    plan = request.plan
    target = plan.target
    _, cluster = topology.cluster(plan.cluster)
    os_user = cluster.os_user
    staging = Path(plan.staging_dir)
    work = work_dir_of(staging)
    log_file = Path(f"{staging}.log")
    ending: scratch.Ending = "promoted" if target.type == "default" else "paused"
    first = scratch.prepare_empty_dir(staging, os_user)  # before the try: a refusal changes nothing
    port = scratch.free_port()  # free on THIS host, where the staging instance runs
    info = ConnInfo(
        scratch.LOOPBACK, port, cluster.database, cluster.user, cluster.password.resolve() if cluster.password else None
    )
    phases: list[Phase] = [first]
    try:
        shutil.rmtree(work, ignore_errors=True)  # only pgBackRest's files of an earlier attempt
        driver = pgbackrest.restore_driver(topology, plan.cluster, staging, work)
        phases.append(scratch.restore_into(driver, staging, target, ending))
        original_hba = (staging / "pg_hba.conf").read_text()
        phases.append(
            scratch.configure_instance(
                staging, name=f"restore-{plan.node}", port=port, cluster=cluster, os_user=os_user
            )
        )
        phases.append(scratch.start_instance(staging, log_file, os_user, request.start_timeout_seconds))
        phases.append(
            scratch.wait_recovered(info, staging, log_file, os_user, ending, target, request.recovery_timeout_seconds)
        )
        phase, tables = scratch.check_data(info, target)
        phases.append(phase)
        if plan.role == "primary" and ending == "paused":
            started = time.monotonic()
            sql = BackupSql(info)
            sql.end_recovery()
            poll_until(
                lambda: not sql.recovery_state().in_recovery,
                timeout=60,
                interval=0.2,
                what="the restored instance to leave recovery",
            )
            phases.append(
                Phase(
                    phase="promote",
                    seconds=time.monotonic() - started,
                    detail="ended recovery at the target: a primary on a new timeline",
                )
            )
        stop_instance(staging, os_user, mode="fast")  # clean, so the swapped directory needs no crash recovery
    except BaseException:
        scratch.remove_dir(staging, os_user)
        shutil.rmtree(work, ignore_errors=True)
        raise
    return StagedRestore(
        node=plan.node,
        staging_dir=str(staging),
        phases=phases,
        tables=tables,
        original_hba=original_hba,
        promoted=plan.role == "primary",
    )


def activate(topology: Topology, request: ActivateRequest) -> ActivatedRestore:
    """On the node's host: swap the verified copy in, give it the node's role, start it; swap back on failure.

    The old data directory is kept aside until the node runs from the new one, then
    removed unless ``keep_old``.
    """
    plan = request.plan
    _, cluster = topology.cluster(plan.cluster)
    netns = topology.node(plan.cluster, plan.node).netns  # the old server restarts where it ran
    activation: Activation | None = None
    phases: list[Phase] = []
    try:
        activation = swap_in(plan, cluster.os_user)
        phases.append(configure_role(plan, topology, request.original_hba))
        phases.append(start_node(plan, topology, request.start_timeout_seconds))
    except Exception as exc:
        # The message travels back from the node's worker: it must say what was undone.
        undone = swap_back(plan, activation, cluster.os_user, plan.node_running, netns)
        raise VerificationFailed(f"restore of {plan.node} failed after the swap: {exc}; {undone}") from exc
    except BaseException:
        swap_back(plan, activation, cluster.os_user, plan.node_running, netns)
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
    return Activation(
        node=plan.node,
        data_dir=str(data_dir),
        old_dir=str(old) if moved_old else None,
        stopped_old=stopped,
        seconds=time.monotonic() - started,
    )


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
    # The staging instance's overrides, and pgBackRest's recovery settings (its
    # restore_command names the staging configuration), must not outlive it.
    set_auto_conf(
        data_dir,
        {
            "port": None,
            "listen_addresses": None,
            "cluster_name": None,
            "unix_socket_directories": None,
            "archive_mode": None,
            "hot_standby": None,
            "shared_buffers": None,
            "recovery_target_time": None,
            "recovery_target_xid": None,
        },
        cluster.os_user,
    )
    if (data_dir / ARCHIVE_CONF).exists():
        # The backup's archive settings name the node it was taken from: archive as this node.
        stanza = pgbackrest.plan_stanza(topology, plan.cluster)
        pgbackrest.write_config(topology, stanza, plan.node)
        write_archive_settings(
            data_dir, pgbackrest.archive_settings(stanza, plan.node, pgbackrest.binary()), cluster.os_user
        )
        if plan.role == "primary":
            _queue_history_files(data_dir, cluster.os_user)
    if plan.role == "replica":
        assert plan.primary is not None
        configure_standby(
            data_dir,
            primary_conninfo=replication_conninfo(cluster, plan.primary, plan.node),
            slot=slot_name(plan.node),
            os_user=cluster.os_user,
        )
    return Phase(
        phase="configure role",
        seconds=time.monotonic() - started,
        detail=f"{plan.node} settings, port {node.port}, role {plan.role}",
    )


def _queue_history_files(data_dir: Path, os_user: str | None) -> None:
    # The staging instance promoted with archiving off, so PostgreSQL never queued the new
    # timeline's history file; without it in the archive, a later point-in-time restore
    # cannot follow this timeline.  A ``.ready`` mark makes the archiver push it at start
    # (pushing a history file the archive already holds, identical, is accepted).
    status = data_dir / "pg_wal" / "archive_status"
    for history in sorted((data_dir / "pg_wal").glob("*.history")):
        if not (status / f"{history.name}.done").exists():
            ready = status / f"{history.name}.ready"
            ready.touch()
            chown_to(ready, os_user)


def swap_back(
    plan: RestorePlan,
    activation: Activation | None,
    os_user: str | None,
    restart_old: bool,
    netns: str | None = None,
) -> str:
    """Undo :func:`swap_in` after a failure: the new data aside, the old data back, old server restarted
    (in the node's network namespace, ``netns``, where it has one: a lab region's)."""
    data_dir, old = Path(plan.data_dir), Path(plan.old_dir)
    failed = Path(f"{plan.data_dir}.failed-restore-{plan.label}")
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
            PgCtl(data_dir, os_user, node_log(plan), netns=netns).start()
        return f"swapped back: the old data is in {data_dir} again; the failed restore is in {failed}"
    return f"the failed restore is in {failed}; there was no old data to put back"


def remove_old(plan: RestorePlan, activation: Activation) -> str:
    """Delete the old directory (and the staging instance's log) once the node runs from the restored one."""
    Path(f"{plan.staging_dir}.log").unlink(missing_ok=True)
    shutil.rmtree(work_dir_of(Path(plan.staging_dir)), ignore_errors=True)
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
    PgCtl(plan.data_dir, cluster.os_user, node_log(plan), netns=node.netns).start(timeout=int(timeout))
    info = conninfo_for(cluster, node)
    observer = observer_for(connect_timeout=2)

    def playing_role() -> NodeState | None:
        state = observer.observe(plan.node, info)
        if not state.reachable:
            return None
        if plan.role == "primary":
            return state if state.role == "primary" else None
        streaming = state.role == "replica" and state.wal_receiver and state.wal_receiver.status == "streaming"
        return state if streaming else None

    try:
        state = poll_until(playing_role, timeout=timeout, interval=0.2, what=f"{plan.node} to run as {plan.role}")
    except TransientError as exc:
        tail = (
            " | ".join(node_log(plan).read_text(errors="replace").strip().splitlines()[-3:])
            if node_log(plan).exists()
            else ""
        )
        raise VerificationFailed(f"{plan.node} started from the restored data but {exc}; log: {tail}") from exc
    return Phase(phase="start node", seconds=time.monotonic() - started, detail=state.sentence())
