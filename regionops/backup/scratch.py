"""Restoring a backup into a directory and proving it: the steps restore-verify and restore share.

Each step is a function that returns a typed result with its duration, so the
runbooks can time every phase.  Downloads are streamed: each object is hashed while
it is fed to ``tar -x``, and a checksum that does not match the manifest fails the
step naming the object (so does a missing or truncated object).  The instance is
started on a loopback port with a throwaway pg_hba.conf, and recovery stops at the
backup's recovery target and pauses there, read-only, for the fingerprint check.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import time
from pathlib import Path

from regionops.backup.manifest import BackupManifest, StoredObject, human_bytes
from regionops.backup.restore_model import Phase, TableCheck
from regionops.drivers.backupsql import BackupSql, RecoveryState
from regionops.drivers.basebackup import ExtractFailed, TarExtract
from regionops.drivers.objectstore import ObjectNotFound, ObjectStore
from regionops.drivers.pgconf import configure_recovery_target, set_auto_conf, write_hba
from regionops.drivers.pgtools import PgCtl, chown_to, reachable_by, run_tool, tool
from regionops.drivers.postgres import ConnInfo
from regionops.errors import (
    ConfigurationError,
    ExternalSystemError,
    PreconditionFailed,
    TransientError,
    VerificationFailed,
)
from regionops.topology import Cluster
from regionops.waiting import poll_until

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def prepare_empty_dir(path: Path, os_user: str | None) -> Phase:
    """Create ``path`` as an empty 0700 directory owned by ``os_user``; refuse a non-empty one."""
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


def fetch_and_unpack(
    store: ObjectStore, bucket: str, manifest: BackupManifest, kind: str, target: Path, os_user: str | None
) -> Phase:
    """Download the backup's ``kind`` objects ("base" or "wal"), verify each sha256, unpack into ``target``."""
    objects = manifest.base_objects if kind == "base" else manifest.wal_objects
    started = time.monotonic()
    if not objects:
        return Phase(phase=f"download + unpack {kind}", seconds=0.0, detail="nothing to fetch")
    compression = manifest.compression if kind == "base" else "gzip"
    total = 0
    with TarExtract(target, compression, os_user) as tar:
        for obj in objects:
            total += _feed(store, bucket, manifest.backup_id, obj, tar)
        try:
            tar.finish()
        except ExtractFailed as exc:
            raise VerificationFailed(
                f"backup {manifest.backup_id}: s3://{bucket}/{objects[-1].key} (the last {kind} object) "
                f"ended a tar stream that does not unpack: {exc}"
            ) from exc
    seconds = time.monotonic() - started
    return Phase(
        phase=f"download + unpack {kind}", seconds=seconds,
        detail=f"{len(objects)} object(s), {human_bytes(total)}, every sha256 matches "
               f"({human_bytes(total / max(seconds, 1e-6))}/s)",
    )


def _feed(store: ObjectStore, bucket: str, backup_id: str, obj: StoredObject, tar: TarExtract) -> int:
    """Stream one object into tar, hashing it; VerificationFailed naming the object when it is wrong."""
    where = f"s3://{bucket}/{obj.key}"
    digest, size = hashlib.sha256(), 0
    chunks = store.iter_object(bucket, obj.key)
    unpack_error: ExtractFailed | None = None
    try:
        for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
            if unpack_error is None:
                try:
                    tar.write(chunk)
                except ExtractFailed as exc:
                    # Keep hashing: the checksum tells corrupt data from a tar problem.
                    unpack_error = exc
    except ObjectNotFound as exc:
        raise VerificationFailed(f"backup {backup_id}: object {where} is missing") from exc
    if size != obj.size or digest.hexdigest() != obj.sha256:
        what = "truncated" if size < obj.size else "corrupt"
        raise VerificationFailed(
            f"backup {backup_id}: object {where} is {what}: {size} bytes with sha256 {digest.hexdigest()[:16]}…, "
            f"the manifest says {obj.size} bytes with sha256 {obj.sha256[:16]}…"
        )
    if unpack_error is not None:
        raise VerificationFailed(f"backup {backup_id}: object {where} does not unpack: {unpack_error}")
    return size


def verify_pg_backup(data_dir: Path, manifest: BackupManifest, os_user: str | None, timeout: float = 3600) -> Phase:
    """pg_verifybackup against the backup_manifest inside the archive, when there is one."""
    started = time.monotonic()
    if not manifest.pg_manifest:
        return Phase(phase="pg_verifybackup", seconds=0.0,
                     detail="skipped: server-side compression leaves no backup_manifest in the stream")
    try:
        output = run_tool([tool("pg_verifybackup"), str(data_dir)], os_user=os_user, timeout=timeout)
    except (ExternalSystemError, TransientError) as exc:
        raise VerificationFailed(f"backup {manifest.backup_id}: pg_verifybackup failed: {exc}") from exc
    return Phase(phase="pg_verifybackup", seconds=time.monotonic() - started,
                 detail=output.strip().splitlines()[-1] if output.strip() else "verified")


def configure_instance(
    data_dir: Path, manifest: BackupManifest, *, name: str, port: int, cluster: Cluster, os_user: str | None
) -> Phase:
    """Settings for a restored instance on a loopback port, recovering to the backup's target.

    pg_hba.conf is replaced with loopback-only trust for the cluster user: the instance
    is private to this machine, and the production rules may not admit loopback at all.
    Call after pg_verifybackup (which checks the original files).
    """
    started = time.monotonic()
    set_auto_conf(data_dir, {
        "port": str(port), "listen_addresses": LOOPBACK, "cluster_name": name,
        "unix_socket_directories": "", "archive_mode": "off", "hot_standby": "on",
        "primary_conninfo": None, "primary_slot_name": None,
    }, os_user)
    write_hba(data_dir, [f"host all {cluster.user} {LOOPBACK}/32 trust"], os_user)
    configure_recovery_target(data_dir, manifest.recovery_target.settings(), os_user)
    return Phase(phase="configure", seconds=time.monotonic() - started,
                 detail=f"port {port}, recover to {manifest.recovery_target.describe()}")


def start_instance(data_dir: Path, log_file: Path, os_user: str | None, timeout: int = 600) -> Phase:
    """Start PostgreSQL on the restored directory and wait until it accepts connections."""
    started = time.monotonic()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.touch()
    chown_to(log_file, os_user)
    try:
        PgCtl(data_dir, os_user, log_file).start(timeout=timeout)
    except (ExternalSystemError, TransientError) as exc:
        tail = " | ".join(log_file.read_text(errors="replace").strip().splitlines()[-3:])
        raise VerificationFailed(f"the restored instance in {data_dir} did not start: {exc}; log: {tail}") from exc
    return Phase(phase="start", seconds=time.monotonic() - started, detail="accepting connections")


def wait_at_target(info: ConnInfo, manifest: BackupManifest, timeout: float = 600) -> tuple[Phase, RecoveryState]:
    """Wait until recovery has stopped (paused) at the backup's recovery target."""
    started = time.monotonic()
    sql = BackupSql(info, statement_timeout_ms=30_000)

    def paused() -> RecoveryState | None:
        try:
            state = sql.recovery_state()
        except TransientError:
            return None
        if not state.in_recovery:
            raise VerificationFailed("the restored instance left recovery instead of pausing at its target")
        return state if state.pause_state == "paused" else None

    state = poll_until(paused, timeout=timeout, interval=0.1, what="recovery to reach the backup's target")
    if manifest.recovery_target.lsn is not None and state.replay_lsn is not None \
            and state.replay_lsn < manifest.recovery_target.lsn:
        raise VerificationFailed(
            f"recovery paused at {state.replay_lsn}, before the backup's target {manifest.recovery_target.lsn}"
        )
    return Phase(phase="recover", seconds=time.monotonic() - started,
                 detail=f"paused at {state.replay_lsn} ({manifest.recovery_target.describe()})"), state


def check_fingerprint(info: ConnInfo, manifest: BackupManifest) -> tuple[Phase, list[TableCheck]]:
    """Compare the restored tables with the manifest's fingerprint; VerificationFailed naming each mismatch."""
    started = time.monotonic()
    if not manifest.fingerprint:
        return Phase(phase="fingerprint", seconds=0.0,
                     detail=f"not compared: {manifest.fingerprint_note or 'no fingerprint recorded'}"), []
    try:
        restored = BackupSql(info).fingerprints(sorted(manifest.fingerprint))
    except ExternalSystemError as exc:
        raise VerificationFailed(f"backup {manifest.backup_id}: fingerprint tables unreadable: {exc}") from exc
    checks = [
        TableCheck(table=t, expected_rows=fp.rows, expected_checksum=fp.checksum,
                   restored_rows=int(restored[t]["rows"]), restored_checksum=str(restored[t]["checksum"]))
        for t, fp in sorted(manifest.fingerprint.items())
    ]
    bad = [c for c in checks if not c.matches]
    if bad:
        raise VerificationFailed(
            f"backup {manifest.backup_id}: fingerprint mismatch: "
            + "; ".join(
                f"table {c.table} restored {c.restored_rows} rows (checksum {c.restored_checksum}), the manifest "
                f"says {c.expected_rows} rows (checksum {c.expected_checksum})" for c in bad
            )
        )
    rows = ", ".join(f"{c.table} {c.restored_rows} rows" for c in checks)
    return Phase(phase="fingerprint", seconds=time.monotonic() - started, detail=f"matches the manifest: {rows}"), checks


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
