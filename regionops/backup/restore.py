"""Restores with pgBackRest: which set and target, restore verification's result, and the real restore onto a node.

A real restore never writes into the node's data directory.  ``pgbackrest restore``
writes into an EMPTY directory beside it (``<data_dir>.restore-<label>``; a used one is
refused), the copy is started on a loopback port, recovers to the target and is
proven, and only then are the directories swapped: the old one is renamed aside
(``<data_dir>.pre-restore-<label>``) and kept until the node runs from the new one.
A failure after the swap swaps back.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Collection
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel

from regionops.backup import scratch
from regionops.backup.restore_model import (
    ActivatedRestore,
    ActivateRequest,
    Activation,
    BackupSet,
    Fingerprint,
    Phase,
    RequestedTarget,
    RestoreDiskFacts,
    RestorePlan,
    RestoreTarget,
    Role,
    StagedRestore,
    StageRequest,
    TableCheck,
    human_bytes,
)
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
from regionops.drivers.pgtools import PgCtl, chown_to
from regionops.drivers.postgres import ConnInfo, NodeState, conninfo_for, observer_for
from regionops.errors import ConfigurationError, PreconditionFailed, TransientError, VerificationFailed
from regionops.lsn import Lsn
from regionops.node.local import replication_conninfo, server_log
from regionops.topology import Topology
from regionops.waiting import poll_until


class RestoreVerification(BaseModel):
    """The outcome of a restore verification: phases, times and what the data looked like."""

    label: str
    cluster: str
    repo: int
    target: str
    passed: bool
    phases: list[Phase]
    restore_seconds: float
    total_seconds: float
    tables: list[TableCheck] = []
    error: str | None = None

    def sentence(self) -> str:
        """The verdict as a sentence.

        'backup … of core restored to … and verified: restore time 3.1 s (total 4.0 s); public.orders 5000 rows match'.
        """
        if not self.passed:
            return f"restore verification of backup {self.label} of {self.cluster} FAILED: {self.error}"
        verb = "match the proof" if any(t.compared for t in self.tables) else "(counted)"
        data = "; ".join(f"{t.table} {t.restored_rows} rows" for t in self.tables) or "no fingerprint tables"
        return (
            f"backup {self.label} of {self.cluster} restored from repo{self.repo} to {self.target} and verified: "
            f"restore time {self.restore_seconds:.1f} s (total {self.total_seconds:.1f} s); {data} {verb}"
        )


# -- which set, which target (pure: what pgBackRest lists and the proof record) -----------
def _parse_time(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise ConfigurationError(f"target time {value!r} is not a time such as '2026-11-24 14:04:00+00'") from exc
    if when.tzinfo is None:
        raise ConfigurationError(f"target time {value!r} has no time zone; give it, e.g. '{value}+00'")
    return when


def choose_set(
    cluster: str, sets: list[BackupSet], repo: int, label: str | None, target_type: RequestedTarget, target: str | None
) -> BackupSet:
    """The backup set to restore: ``label``, or the newest that ended before a time/LSN target (else the newest).

    Refuses a set that does not exist, and a target before the chosen set's end
    (recovery can only stop after the backup it starts from is consistent).
    """
    if target_type in ("time", "lsn", "name") and not target:
        raise ConfigurationError(f"a {target_type} target needs `target`")
    if target_type not in ("time", "lsn", "name") and target:
        raise ConfigurationError(f"`target` {target!r} is only for time, lsn or name targets, not {target_type}")
    if not sets:
        raise PreconditionFailed(f"repo{repo} of {cluster} holds no backup set to restore")
    when = _parse_time(target) if target_type == "time" and target else None
    lsn = Lsn.parse(target) if target_type == "lsn" and target else None

    def ended_before(s: BackupSet) -> bool:
        if when is not None:
            return s.stopped <= when
        if lsn is not None and s.lsn_stop:
            return Lsn.parse(s.lsn_stop) <= lsn
        return True

    if label:
        chosen = next((s for s in sets if s.label == label), None)
        if chosen is None:
            raise PreconditionFailed(
                f"backup set {label} does not exist in repo{repo} of {cluster}; sets there: "
                + ", ".join(s.label for s in sets)
            )
        if not ended_before(chosen):
            ended = chosen.lsn_stop if lsn is not None else f"{chosen.stopped:%Y-%m-%d %H:%M:%S}+00"
            raise PreconditionFailed(
                f"target {target_type} {target} is before backup set {label} ended ({ended}): recovery can only "
                "stop after the end of the backup it starts from; choose an older set or a later target"
            )
        return chosen
    fitting = [s for s in sets if ended_before(s)]
    if not fitting:
        raise PreconditionFailed(
            f"no backup set in repo{repo} of {cluster} ended before {target_type} {target}; "
            f"the oldest, {sets[0].label}, ended {sets[0].stopped:%Y-%m-%d %H:%M:%S}+00"
        )
    return fitting[-1]


def target_for(
    cluster: str,
    chosen: BackupSet,
    target_type: RequestedTarget,
    target: str | None,
    proof_point: str | None,
    proof: dict[str, Fingerprint],
    tables: list[str],
) -> RestoreTarget:
    """Where recovery of ``chosen`` stops; ``proof`` applies when that is the set's proof restore point.

    ``proof``: the set's proof record has a restore point: stop there and compare the
    fingerprint; without one, recover to the end of the archive and count rows.
    """
    base = dict(
        cluster=cluster,
        label=chosen.label,
        repo=chosen.repo,
        set_stopped=f"{chosen.stopped:%Y-%m-%d %H:%M:%S}+00",
        tables=sorted(proof) or tables,
    )
    if target_type == "proof":
        if proof_point:
            return RestoreTarget(**base, type="name", target=proof_point, proof_point=True, expected=proof)
        return RestoreTarget(**base, type="default")
    at_proof = target_type == "name" and bool(proof_point) and target == proof_point
    return RestoreTarget(
        **base, type=target_type, target=target, proof_point=at_proof, expected=proof if at_proof else {}
    )


# -- restore onto a node ----------------------------------------------------------------
def plan_restore(
    topology: Topology,
    cluster_name: str,
    node: str,
    target: RestoreTarget,
    states: dict[str, NodeState],
    disk: RestoreDiskFacts,
    role: str = "auto",
    *,
    fenced: Collection[str] = (),
    confirmed_down: Collection[str] = (),
) -> RestorePlan:
    """Decide role and paths, and refuse what would be unsafe.  Changes nothing.

    ``disk`` is what the node's host read (:func:`disk_facts`, through the node seam):
    free space beside the data directory, whether it runs, whether it holds data.

    A node is restored as a **primary** only when it cannot become a second one: every
    other node answers as a replica, or the operator confirmed it is down for good
    (``confirmed_down``: stopped or lost; the runbook fences those before it restores).
    Another primary, a fenced node (an old primary a failover took out, whose successor
    may be cut off) and an unreachable node (it may be a primary we cannot see) refuse it.
    """
    target_node = topology.node(cluster_name, node)
    state = states.get(node)
    primaries = [n for n, s in states.items() if s.reachable and s.role == "primary" and n != node]
    if state is not None and state.reachable and state.role == "primary":
        raise PreconditionFailed(
            f"{node} is the running primary of {cluster_name}; restoring over it would take the cluster's writer "
            "down. Fail over or stop it first"
        )
    unknown = sorted(set(confirmed_down) - set(topology.clusters[cluster_name].nodes))
    if unknown or node in confirmed_down:
        raise ConfigurationError(
            f"confirmed_down names {', '.join(unknown) or node}: only the cluster's other nodes can be confirmed down"
        )
    chosen: Role = ("replica" if primaries else "primary") if role == "auto" else role  # type: ignore[assignment]
    primary = primaries[0] if primaries else None
    if chosen == "replica" and primary is None:
        raise PreconditionFailed(f"cannot restore {node} as a replica: {cluster_name} has no reachable primary")
    if chosen == "primary":
        _refuse_second_primary(cluster_name, node, states, primaries, fenced, confirmed_down)
    if chosen == "replica" and target.type == "default":
        # The end of the archive would end recovery (a new timeline that could never stream
        # from the primary): a replica stops at the backup's end and streams the rest.
        target = target.model_copy(update={"type": "immediate", "target": None})
    data_dir = Path(target_node.data_dir)
    size = next((s.size for s in disk.sets if s.label == target.label), 0)
    needed = int(size * 1.1)
    if needed > disk.free_bytes:
        raise PreconditionFailed(
            f"{data_dir.parent} has {human_bytes(disk.free_bytes)} free; restoring backup "
            f"{target.label} needs about {human_bytes(needed)}"
        )
    return RestorePlan(
        cluster=cluster_name,
        node=node,
        target=target,
        role=chosen,
        primary=primary,
        data_dir=str(data_dir),
        staging_dir=f"{data_dir}.restore-{target.label}",
        old_dir=f"{data_dir}.pre-restore-{target.label}",
        node_running=disk.running,
        node_has_data=disk.has_data,
        needed_bytes=needed,
        free_bytes=disk.free_bytes,
    )


def _refuse_second_primary(
    cluster: str,
    node: str,
    states: dict[str, NodeState],
    primaries: list[str],
    fenced: Collection[str],
    confirmed_down: Collection[str],
) -> None:
    """PreconditionFailed naming every other node that could be (or become) a primary beside the restored one."""
    problems = [f"{p} is a reachable primary (split brain)" for p in primaries]
    problems += [
        f"{n} is confirmed down but answers as a {states[n].role}"
        for n in sorted(confirmed_down)
        if n in states and states[n].reachable and n not in primaries
    ]
    for other, st in sorted(states.items()):
        if other == node or other in primaries or other in confirmed_down:
            continue
        if other in fenced:
            problems.append(f"{other} is fenced (an old primary: its successor may be cut off, not gone)")
        elif not st.reachable:
            problems.append(f"{other} does not answer ({st.error or 'unreachable'}): it may be a primary we cannot see")
    if problems:
        raise PreconditionFailed(
            f"cannot restore {node} as a primary: " + "; ".join(problems) + ". If a node is stopped or lost for "
            "good, name it in confirmed_down (it is fenced before the restore)"
        )


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


def swap_back(plan: RestorePlan, activation: Activation | None, os_user: str | None, restart_old: bool) -> str:
    """Undo :func:`swap_in` after a failure: the new data aside, the old data back, old server restarted."""
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
            PgCtl(data_dir, os_user, node_log(plan)).start()
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
    PgCtl(plan.data_dir, cluster.os_user, node_log(plan)).start(timeout=int(timeout))
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
