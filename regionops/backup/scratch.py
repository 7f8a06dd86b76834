"""Restoring a backup set into an empty directory with pgBackRest and proving it: the steps both runbooks share.

Each step returns a :class:`Phase` with its duration, so the runbooks time every part.
``pgbackrest restore`` writes the recovery settings (restore_command, target, action);
the instance then starts on a free loopback port with a throwaway pg_hba.conf (the
cluster's password required, never trust), no
archiving and small buffers, recovers to the target, and its fingerprint tables are
counted (and compared with the proof when recovery stopped at the proof's restore point).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Literal

from regionops.drivers.backupsql import BackupSql
from regionops.drivers.pgbackrest import PgBackRest, restore_driver
from regionops.drivers.pgconf import set_auto_conf, write_hba
from regionops.drivers.pgtools import PgCtl, chown_to, reachable_by
from regionops.drivers.postgres import ConnInfo
from regionops.errors import (
    ConfigurationError,
    ExternalSystemError,
    PreconditionFailed,
    RunbookError,
    TransientError,
    VerificationFailed,
)
from regionops.model.restore import BackupSet, Phase, RestoreTarget, TableCheck, human_bytes
from regionops.topology import Cluster, Topology
from regionops.waiting import poll_until

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
Ending = Literal["paused", "promoted"]


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def prepare_empty_dir(path: Path, os_user: str | None) -> Phase:
    """Create ``path`` as an empty 0700 directory owned by ``os_user``; refuse a non-empty one, naming it."""
    started = time.monotonic()
    if path.exists() and any(path.iterdir()):
        raise PreconditionFailed(f"{path} exists and is not empty; a restore never writes into a used directory")
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    chown_to(path, os_user)
    if not reachable_by(os_user, path):
        raise ConfigurationError(
            f"{path} is not reachable by OS user {os_user!r}, who runs PostgreSQL (a parent directory is "
            "private); choose a scratch directory it can reach, e.g. under /tmp or /srv"
        )
    return Phase(phase="prepare", seconds=time.monotonic() - started, detail=f"empty directory {path}")


def backup_sets(driver: PgBackRest, repo: int) -> list[BackupSet]:
    """The good backup sets pgBackRest lists in ``repo``, oldest first."""
    return [
        BackupSet(label=b.label, type=b.type, repo=b.repo, stopped=b.stopped, lsn_stop=b.lsn_stop, size=b.size)
        for b in driver.info(repo=repo).backups
        if not b.error and b.repo == repo
    ]


def list_sets(topology: Topology, cluster: str, repo: int) -> list[BackupSet]:
    """``pgbackrest info`` of ``repo`` on this machine, through a throwaway restore configuration."""
    work = Path(tempfile.mkdtemp(prefix="regionops-pgbackrest-info-"))
    os.chmod(work, 0o755)  # the OS user that runs pgbackrest reads its configuration in there
    try:
        return backup_sets(restore_driver(topology, cluster, work / "none", work / "pgbackrest"), repo)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def restore_into(
    driver: PgBackRest, data_dir: Path, target: RestoreTarget, ending: Ending, timeout: float = 6 * 3600
) -> Phase:
    """``pgbackrest restore`` of the target's set into the empty ``data_dir``, recovering to the target.

    ``ending``: ``promoted`` ends recovery at the target (a new timeline), ``paused``
    keeps it in recovery there (to become a replica); the end of the archive always ends it.
    """
    action = "pause" if ending == "paused" else "promote"
    try:
        result = driver.restore(
            data_dir,
            target_type=target.type,
            target=target.target,
            repo=target.repo,
            backup_set=target.label,
            target_action=action,
            timeout=timeout,
        )
    except ExternalSystemError as exc:
        raise _diagnosed(driver, target, exc) from exc
    return Phase(
        phase="pgbackrest restore",
        seconds=result.seconds,
        detail=f"backup {target.label} from repo{target.repo} into {data_dir}, to {target.describe()}",
    )


def _diagnosed(driver: PgBackRest, target: RestoreTarget, failure: ExternalSystemError) -> VerificationFailed:
    """A failed restore, with what ``pgbackrest verify`` of the repository names.

    (pgBackRest's own message rarely names the object.)
    """
    try:
        # verify reads every file of the repository with one request each: it waits on the
        # object store, not the CPU, so more processes than the backups' own get the answer sooner.
        driver.verify(repo=target.repo, process_max=max(8, driver.plan.settings.process_max))
    except VerificationFailed as found:
        return VerificationFailed(f"backup {target.label}: {failure}; {found}")
    except RunbookError as other:
        return VerificationFailed(f"backup {target.label}: {failure}; pgbackrest verify could not run: {other}")
    return VerificationFailed(
        f"backup {target.label}: {failure}; pgbackrest verify of repo{target.repo} found every object intact"
    )


def configure_instance(data_dir: Path, *, name: str, port: int, cluster: Cluster, os_user: str | None) -> Phase:
    """A restored directory as a private instance: loopback port, no archiving, small buffers, no standby role.

    pg_hba.conf is replaced with one loopback rule for the cluster user, with a password
    (scram-sha-256: the restored roles carry the cluster's password): the instance holds
    production data and a superuser, so a TCP port that trusts anyone on this machine
    would hand both out.  The production rules may not admit loopback at all.
    """
    started = time.monotonic()
    set_auto_conf(
        data_dir,
        {
            "port": str(port),
            "listen_addresses": LOOPBACK,
            "cluster_name": name,
            "unix_socket_directories": "",
            "archive_mode": "off",
            "hot_standby": "on",
            "shared_buffers": "32MB",
            "primary_conninfo": None,
            "primary_slot_name": None,
        },
        os_user,
    )
    (data_dir / "standby.signal").unlink(missing_ok=True)
    write_hba(data_dir, [f"host all {cluster.user} {LOOPBACK}/32 scram-sha-256"], os_user)
    return Phase(
        phase="configure",
        seconds=time.monotonic() - started,
        detail=f"private instance on {LOOPBACK}:{port}, archiving off",
    )


def _log_tail(log_file: Path) -> str:
    if not log_file.exists():
        return ""
    return " | ".join(log_file.read_text(errors="replace").strip().splitlines()[-4:])


def start_instance(data_dir: Path, log_file: Path, os_user: str | None, timeout: int = 600) -> Phase:
    """Start PostgreSQL on the restored directory and wait until it accepts connections."""
    started = time.monotonic()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.touch()
    chown_to(log_file, os_user)
    try:
        PgCtl(data_dir, os_user, log_file).start(timeout=timeout)
    except (ExternalSystemError, TransientError) as exc:
        raise VerificationFailed(
            f"the restored instance in {data_dir} did not start: {exc}; log: {_log_tail(log_file)}"
        ) from exc
    return Phase(phase="start", seconds=time.monotonic() - started, detail="accepting connections")


def wait_recovered(
    info: ConnInfo,
    data_dir: Path,
    log_file: Path,
    os_user: str | None,
    ending: Ending,
    target: RestoreTarget,
    timeout: float = 1800,
) -> Phase:
    """Wait until recovery reached the target: paused there, or ended (promoted).

    Reaching it also means the instance is consistent.  PostgreSQL stops the server
    when the archive ends before the target: that fails at once, with its log.
    """
    started = time.monotonic()
    sql = BackupSql(info, statement_timeout_ms=30_000)

    def reached() -> bool:
        try:
            state = sql.recovery_state()
        except TransientError:
            if not PgCtl(data_dir, os_user).is_running():
                raise VerificationFailed(
                    f"the restored instance stopped before reaching {target.describe()}: {_log_tail(log_file)}"
                ) from None
            return False
        if ending == "promoted":
            return not state.in_recovery
        if not state.in_recovery:
            raise VerificationFailed(f"the restored instance left recovery instead of pausing at {target.describe()}")
        return state.pause_state == "paused"

    poll_until(reached, timeout=timeout, interval=0.1, what=f"recovery to reach {target.describe()}")
    return Phase(
        phase="recover", seconds=time.monotonic() - started, detail=f"{ending} at {target.describe()}: consistent"
    )


def check_data(info: ConnInfo, target: RestoreTarget) -> tuple[Phase, list[TableCheck]]:
    """Count the fingerprint tables; at the proof's restore point they must equal the proof exactly."""
    started = time.monotonic()
    if not target.tables:
        return Phase(phase="data", seconds=0.0, detail="no fingerprint tables configured: nothing to count"), []
    try:
        restored = BackupSql(info).fingerprints(sorted(target.tables))
    except ExternalSystemError as exc:
        raise VerificationFailed(f"backup {target.label}: fingerprint tables unreadable: {exc}") from exc
    checks = []
    for table in sorted(target.tables):
        expected = target.expected.get(table) if target.proof_point else None
        checks.append(
            TableCheck(
                table=table,
                restored_rows=int(restored[table]["rows"]),
                restored_checksum=str(restored[table]["checksum"]),
                expected_rows=expected.rows if expected else None,
                expected_checksum=expected.checksum if expected else None,
            )
        )
    bad = [c for c in checks if not c.matches]
    if bad:
        raise VerificationFailed(
            f"backup {target.label}: fingerprint mismatch at {target.describe()}: "
            + "; ".join(
                f"table {c.table} restored {c.restored_rows} rows (checksum {c.restored_checksum}), the proof says "
                f"{c.expected_rows} rows (checksum {c.expected_checksum})"
                for c in bad
            )
        )
    rows = ", ".join(f"{c.table} {c.restored_rows} rows" for c in checks)
    detail = f"matches the proof: {rows}" if target.proof_point else f"counted (no proof at this target): {rows}"
    return Phase(phase="data", seconds=time.monotonic() - started, detail=detail), checks


def stop_instance(data_dir: Path, os_user: str | None, mode: str = "fast") -> bool:
    """Stop the server on ``data_dir`` if one runs.  True when one was stopped."""
    if not (data_dir / "postmaster.pid").exists():
        return False
    ctl = PgCtl(data_dir, os_user)
    if not ctl.is_running():
        return False
    ctl.stop(mode)
    return True


def remove_dir(path: Path, os_user: str | None) -> Phase:
    """Stop whatever runs on ``path`` or a directory in it (immediately: it is disposable), then delete it."""
    started = time.monotonic()
    stopped = []
    if path.exists():
        candidates = [path, *(p for p in path.iterdir() if p.is_dir())]
        for data_dir in candidates:
            try:
                if stop_instance(data_dir, os_user, mode="immediate"):
                    stopped.append(data_dir.name)
            except (ExternalSystemError, TransientError) as exc:
                log.warning("could not stop the instance on %s: %s", data_dir, exc)
        shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        raise ExternalSystemError(f"could not remove {path}")
    detail = ("stopped the instance and " if stopped else "") + f"removed {path}"
    return Phase(phase="teardown", seconds=time.monotonic() - started, detail=detail)


__all__ = [
    "LOOPBACK",
    "backup_sets",
    "check_data",
    "configure_instance",
    "free_port",
    "human_bytes",
    "list_sets",
    "prepare_empty_dir",
    "remove_dir",
    "restore_into",
    "start_instance",
    "stop_instance",
    "wait_recovered",
]
