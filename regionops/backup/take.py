"""Taking a backup: pg_basebackup streamed into S3, a fingerprint point, a manifest written last.

Order matters and is the whole design:

1. the heartbeat exists before anything else, so an interrupted run is recognisable;
2. the tar stream goes through a bounded read-ahead into volumes, each an S3 multipart
   upload (aborted by the object store if it fails): nothing is written locally;
3. on the primary, the fingerprint tables are fingerprinted at a named restore point,
   and the WAL from the backup's end to that point is stored beside the data, so a
   restore that stops there shows exactly the fingerprinted rows;
4. the manifest is written last; then the heartbeat goes.

Any failure deletes what this run uploaded; if even that fails, the stale heartbeat
lets the next backup clean up.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from datetime import datetime, timezone

from pydantic import BaseModel, Field

from regionops.backup.catalog import HeartbeatWriter, delete_backup
from regionops.backup.manifest import (
    MANIFEST,
    WAL_TAIL,
    BackupManifest,
    Compression,
    CompressOn,
    RecoveryTarget,
    StoredObject,
    TableFingerprint,
    backup_prefix,
    new_backup_id,
    volume_key,
)
from regionops.backup.streams import IterReader, ReadAhead, tar_gz_chunks, volumes
from regionops.drivers.backupsql import BackupSql
from regionops.drivers.basebackup import BaseBackupReport, BaseBackupStream
from regionops.drivers.objectstore import DEFAULT_PART_SIZE, MAX_PARTS, ObjectStore
from regionops.drivers.postgres import SqlObserver, conninfo_for
from regionops.errors import (
    ConfigurationError,
    ExternalSystemError,
    PreconditionFailed,
    RunbookError,
    TransientError,
)
from regionops.topology import Topology
from regionops.waiting import poll_until

log = logging.getLogger(__name__)

GiB = 1024 ** 3


class BackupOptions(BaseModel):
    """How to take the backup (defaults suit the nightly run)."""

    compression: Compression = "lz4"
    compression_level: int | None = None
    compress_on: CompressOn = "client"
    fast_checkpoint: bool = True
    max_rate_kbps: int | None = Field(None, ge=32, description="throttle pg_basebackup (kB/s)")
    part_size: int = DEFAULT_PART_SIZE
    volume_size: int = 64 * GiB
    fingerprint_tables: list[str] = []
    lock_timeout_ms: int = 3000
    heartbeat_seconds: float = 15
    read_ahead_bytes: int = 64 << 20

    def model_post_init(self, __context: object) -> None:
        if self.volume_size < self.part_size or self.volume_size % self.part_size:
            raise ConfigurationError(
                f"volume size {self.volume_size} must be a multiple of the part size {self.part_size}"
            )
        if self.volume_size // self.part_size > MAX_PARTS:
            raise ConfigurationError(f"a volume may hold at most {MAX_PARTS} parts of {self.part_size} bytes")


class BackupProgress(BaseModel):
    """How far a running backup is."""

    uploaded_bytes: int
    streamed_kb: int
    estimated_kb: int | None

    @property
    def fraction(self) -> float | None:
        """Share of the estimated size streamed so far (None before pg_basebackup estimates)."""
        if not self.estimated_kb:
            return None
        return min(1.0, self.streamed_kb / self.estimated_kb)


ProgressCallback = Callable[[BackupProgress], None]


def take_backup(
    topology: Topology,
    cluster_name: str,
    *,
    source: str,
    region: str,
    primary: str | None,
    options: BackupOptions,
    store: ObjectStore,
    on_progress: ProgressCallback | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> BackupManifest:
    """Back up ``cluster_name`` from node ``source`` into ``region``'s bucket; the manifest on success.

    ``primary`` is where the fingerprint point is taken (None: the primary is not
    reachable, so the backup records no fingerprint and restores stop at its end).
    """
    _, cluster = topology.cluster(cluster_name)
    bucket = topology.regions[region].bucket

    def unused_id() -> str | None:
        candidate = new_backup_id(now())
        taken = store.list(bucket, backup_prefix(cluster_name, candidate))
        return None if taken or store.pending_uploads(bucket, backup_prefix(cluster_name, candidate)) else candidate

    # Ids have one-second resolution; a backup started in the same second as another waits.
    backup_id = poll_until(unused_id, timeout=5, interval=0.25, what="an unused backup id")
    started = now()
    prefix = backup_prefix(cluster_name, backup_id)
    info = conninfo_for(cluster, cluster.nodes[source])
    identity = SqlObserver().observe(source, info)
    if not identity.reachable:
        raise PreconditionFailed(f"backup source {source} is unreachable: {identity.error}")

    heartbeat = HeartbeatWriter(store, bucket, cluster_name, backup_id, options.heartbeat_seconds,
                                writer=socket.gethostname())
    with heartbeat:
        try:
            objects, report = _stream_base(store, bucket, cluster_name, backup_id, info, cluster.os_user,
                                           options, on_progress)
            target, fingerprint, note, wal = _fingerprint_point(
                topology, cluster_name, primary, backup_id, report, options, store, bucket
            )
            objects += wal
            manifest = BackupManifest(
                backup_id=backup_id, cluster=cluster_name, topology=topology.name, source_node=source,
                source_role=identity.role, home_region=region, server_version=identity.server_version or 0,
                system_identifier=identity.system_identifier or "", timeline=report.timeline,
                start_lsn=report.start_lsn, end_lsn=report.end_lsn, started_at=started, finished_at=now(),
                size_before=report.streamed_kb * 1024, size_after=sum(o.size for o in objects),
                compression=options.compression, compression_level=options.compression_level,
                compress_on=options.compress_on,
                pg_manifest=options.compress_on == "client" or options.compression == "none",
                objects=objects, fingerprint=fingerprint, fingerprint_note=note, recovery_target=target,
            )
            store.put_bytes(bucket, prefix + MANIFEST, manifest.model_dump_json(indent=2).encode())
        except BaseException:
            heartbeat.stop()
            _discard(store, bucket, cluster_name, backup_id)
            raise
        heartbeat.remove()
    log.info("%s", manifest.sentence())
    return manifest


def _stream_base(
    store: ObjectStore, bucket: str, cluster: str, backup_id: str, info, os_user: str | None,
    options: BackupOptions, on_progress: ProgressCallback | None,
) -> tuple[list[StoredObject], BaseBackupReport]:
    """pg_basebackup → read-ahead → volumes → multipart uploads."""
    objects: list[StoredObject] = []
    uploaded_before = 0
    with BaseBackupStream(
        info, compression=options.compression, level=options.compression_level, compress_on=options.compress_on,
        label=f"regionops {cluster} {backup_id}", fast_checkpoint=options.fast_checkpoint,
        max_rate_kbps=options.max_rate_kbps, os_user=os_user,
    ) as stream:
        ahead = ReadAhead(stream, max_buffered=options.read_ahead_bytes)

        def progress(volume_bytes: int) -> None:
            if on_progress:
                on_progress(BackupProgress(uploaded_bytes=uploaded_before + volume_bytes,
                                           streamed_kb=stream.done_kb, estimated_kb=stream.total_kb))

        try:
            for number, volume in enumerate(volumes(ahead, options.volume_size)):
                key = volume_key(cluster, backup_id, options.compression, number)
                result = store.upload_stream(bucket, key, volume, options.part_size, on_progress=progress)
                objects.append(StoredObject(key=key, kind="base", size=result.size, sha256=result.sha256))
                uploaded_before += result.size
        except RunbookError as exc:
            # When pg_basebackup died first, its complaint is the real cause, not the upload's.
            failure = stream.failure()
            if failure:
                raise ExternalSystemError(failure) from exc
            raise
        finally:
            ahead.close()
        report = stream.finish()
    if not objects:
        raise ExternalSystemError("pg_basebackup produced no output")
    return objects, report


def _fingerprint_point(
    topology: Topology, cluster_name: str, primary: str | None, backup_id: str, report: BaseBackupReport,
    options: BackupOptions, store: ObjectStore, bucket: str,
) -> tuple[RecoveryTarget, dict[str, TableFingerprint], str | None, list[StoredObject]]:
    """Fingerprint at a restore point and store the WAL reaching it; or explain why not."""
    immediate = RecoveryTarget(kind="immediate")
    if not options.fingerprint_tables:
        return immediate, {}, "no fingerprint tables configured; data is not compared on restore", []
    if primary is None:
        return immediate, {}, "the primary was unreachable; no fingerprint point could be taken", []
    _, cluster = topology.cluster(cluster_name)
    sql = BackupSql(conninfo_for(cluster, cluster.nodes[primary]))
    name = f"regionops-{cluster_name}-{backup_id}"
    try:
        point = _with_lock_retries(lambda: sql.fingerprint_point(options.fingerprint_tables, name,
                                                                 options.lock_timeout_ms))
        # The restore point is in WAL buffers; it must be on disk before the file is read.
        poll_until(lambda: sql.flush_lsn() >= point.lsn, timeout=30, interval=0.1, what="restore point flushed")
        segment_size, page = sql.wal_segment_size(), sql.wal_block_size()
        segments = sql.wal_segments(report.end_lsn, point.lsn)
        # Of the last file only the pages up to the restore point matter; the rest is sent as zeros.
        last_upto = -(-(point.lsn.value % segment_size or segment_size) // page) * page
        members = [
            (f"pg_wal/{seg}", segment_size,
             lambda seg=seg, upto=(last_upto if seg == segments[-1] else None): sql.read_wal_segment(
                 seg, segment_size, upto))
            for seg in segments
        ]
        key = backup_prefix(cluster_name, backup_id) + WAL_TAIL
        result = store.upload_stream(bucket, key, IterReader(tar_gz_chunks(members)), options.part_size)
    except RunbookError as exc:
        log.warning("backup %s: no fingerprint point: %s", backup_id, exc)
        return immediate, {}, f"fingerprint point failed ({exc}); restores stop at the backup's end", []
    wal = [StoredObject(key=key, kind="wal", size=result.size, sha256=result.sha256)]
    prints = {t: TableFingerprint.model_validate(v) for t, v in point.fingerprint.items()}
    return RecoveryTarget(kind="name", name=name, lsn=point.lsn), prints, None, wal


def _with_lock_retries(call, attempts: int = 3):
    """Retry a fingerprint point whose lock timed out: a long transaction may finish soon."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except TransientError:
            if attempt == attempts:
                raise
            log.info("fingerprint lock not granted (attempt %d of %d); trying again", attempt, attempts)
    raise AssertionError("unreachable")


def _discard(store: ObjectStore, bucket: str, cluster: str, backup_id: str) -> None:
    """Delete what a failed backup uploaded; leave it to the next run if that fails too."""
    try:
        deleted = delete_backup(store, bucket, cluster, backup_id)
        log.info("discarded failed backup %s: %d object(s) deleted", backup_id, deleted)
    except Exception as exc:  # noqa: BLE001 - the original failure is the one to report
        log.warning("could not discard failed backup %s (the next backup removes it): %s", backup_id, exc)
