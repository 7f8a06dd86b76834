"""Which backups a bucket holds, which are complete, and cleaning up after interrupted ones.

A backup is *complete* when its manifest exists: that object is written last.  While a
backup (or a copy of one) runs, ``in-progress.json`` beside it is refreshed every few
seconds; an incomplete backup whose heartbeat is older than the grace period was
interrupted, and the next backup removes its objects and unfinished multipart
uploads.  A prefix with neither manifest nor heartbeat (say, a manifest deleted by
hand) is reported but left alone: it may be evidence someone wants to look at.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ValidationError

from regionops.backup.manifest import (
    HEARTBEAT,
    MANIFEST,
    VERIFICATION,
    BackupManifest,
    Verification,
    backup_prefix,
    cluster_prefix,
)
from regionops.drivers.objectstore import ObjectNotFound, ObjectStore
from regionops.errors import PreconditionFailed, VerificationFailed

log = logging.getLogger(__name__)

State = Literal["complete", "running", "interrupted", "unrecognised"]


class Heartbeat(BaseModel):
    """The content of ``in-progress.json``."""

    backup_id: str
    started_at: datetime
    beat_at: datetime
    writer: str = ""


class BackupEntry(BaseModel):
    """One backup prefix in a bucket, complete or not."""

    backup_id: str
    state: State
    manifest: BackupManifest | None = None
    verification: Verification | None = None
    heartbeat_age_seconds: float | None = None
    object_keys: list[str] = []
    pending_uploads: int = 0
    stored_bytes: int = 0

    @property
    def verified(self) -> bool:
        """True when the latest restore verification of this backup passed."""
        return self.verification is not None and self.verification.status == "passed"

    def sentence(self) -> str:
        """One line for listings."""
        if self.state == "complete" and self.manifest:
            mark = {None: "never verified", "passed": "verified", "failed": "verification FAILED"}[
                self.verification.status if self.verification else None
            ]
            return f"{self.manifest.sentence()} ({mark})"
        extra = f", heartbeat {self.heartbeat_age_seconds:.0f} s ago" if self.heartbeat_age_seconds is not None else ""
        return (
            f"backup {self.backup_id} is {self.state}: {len(self.object_keys)} object(s), "
            f"{self.pending_uploads} unfinished upload(s){extra}"
        )


class OrphanCleanup(BaseModel):
    """What cleaning up interrupted backups did (or, in a dry run, would do)."""

    bucket: str
    removed: list[str] = []
    objects_deleted: int = 0
    uploads_aborted: int = 0
    left_alone: list[str] = []
    dry_run: bool = False

    def sentence(self) -> str:
        """One line for the report."""
        verb = "would remove" if self.dry_run else "removed"
        if not self.removed and not self.left_alone:
            return f"no interrupted backups in {self.bucket}"
        text = (
            f"{verb} {len(self.removed)} interrupted backup(s) in {self.bucket}"
            f"{' (' + ', '.join(self.removed) + ')' if self.removed else ''}: "
            f"{self.objects_deleted} object(s), {self.uploads_aborted} unfinished upload(s)"
        )
        if self.left_alone:
            text += f"; left alone (no manifest, no heartbeat): {', '.join(self.left_alone)}"
        return text


def _backup_id_of(key: str, prefix: str) -> str | None:
    rest = key[len(prefix):]
    return rest.split("/", 1)[0] if "/" in rest else None


def _read_json(store: ObjectStore, bucket: str, key: str) -> dict | None:
    try:
        return json.loads(store.get_bytes(bucket, key))
    except ObjectNotFound:
        return None
    except json.JSONDecodeError as exc:
        raise VerificationFailed(f"s3://{bucket}/{key} is not valid JSON: {exc}") from exc


def load_manifest(store: ObjectStore, bucket: str, cluster: str, backup_id: str) -> BackupManifest:
    """The manifest of a backup.  PreconditionFailed when it has none (incomplete: not offered)."""
    key = backup_prefix(cluster, backup_id) + MANIFEST
    data = _read_json(store, bucket, key)
    if data is None:
        raise PreconditionFailed(
            f"backup {backup_id} of {cluster} in {bucket} has no manifest ({key}): it is incomplete "
            "and is not offered for restore"
        )
    try:
        return BackupManifest.model_validate(data)
    except ValidationError as exc:
        raise VerificationFailed(f"s3://{bucket}/{key} is not a valid manifest: {exc}") from exc


def list_backups(
    store: ObjectStore, bucket: str, cluster: str, *, now: datetime | None = None, grace_seconds: float = 600,
    with_manifests: bool = True,
) -> list[BackupEntry]:
    """Every backup prefix of ``cluster`` in ``bucket``, oldest first, with its state.

    ``with_manifests=False`` skips reading each complete backup's manifest and verdict
    (one request each) when only the states matter.
    """
    now = now or datetime.now(timezone.utc)
    prefix = cluster_prefix(cluster)
    keys: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    for obj in store.list(bucket, prefix):
        bid = _backup_id_of(obj.key, prefix)
        if bid:
            keys.setdefault(bid, []).append(obj.key)
            sizes[bid] = sizes.get(bid, 0) + obj.size
    pending: dict[str, int] = {}
    for key, _upload in store.pending_uploads(bucket, prefix):
        bid = _backup_id_of(key, prefix)
        if bid:
            pending[bid] = pending.get(bid, 0) + 1
    entries = []
    for bid in sorted(set(keys) | set(pending)):
        names = {k.rsplit("/", 1)[-1] for k in keys.get(bid, [])}
        entry = BackupEntry(backup_id=bid, state="unrecognised", object_keys=sorted(keys.get(bid, [])),
                            pending_uploads=pending.get(bid, 0), stored_bytes=sizes.get(bid, 0))
        if MANIFEST in names:
            entry.state = "complete"
            if not with_manifests:
                entries.append(entry)
                continue
            entry.manifest = load_manifest(store, bucket, cluster, bid)
            if VERIFICATION in names:
                raw = _read_json(store, bucket, backup_prefix(cluster, bid) + VERIFICATION)
                entry.verification = Verification.model_validate(raw) if raw else None
        elif HEARTBEAT in names:
            raw = _read_json(store, bucket, backup_prefix(cluster, bid) + HEARTBEAT)
            beat = Heartbeat.model_validate(raw) if raw else None
            age = (now - beat.beat_at).total_seconds() if beat else float("inf")
            entry.heartbeat_age_seconds = age
            entry.state = "running" if age <= grace_seconds else "interrupted"
        elif entry.pending_uploads and not entry.object_keys:
            # Killed before its heartbeat was visible is impossible (the heartbeat is written
            # first); an upload with no other object left behind is debris of an interrupted run.
            entry.state = "interrupted"
        entries.append(entry)
    return entries


def complete_backups(store: ObjectStore, bucket: str, cluster: str) -> list[BackupEntry]:
    """The complete backups (manifest present), oldest first."""
    return [e for e in list_backups(store, bucket, cluster) if e.state == "complete"]


def find_backup(store: ObjectStore, bucket: str, cluster: str, backup_id: str | None = None) -> BackupEntry:
    """A complete backup: ``backup_id``, or the newest.  PreconditionFailed naming what is missing."""
    if backup_id is not None:
        manifest = load_manifest(store, bucket, cluster, backup_id)
        raw = _read_json(store, bucket, backup_prefix(cluster, backup_id) + VERIFICATION)
        return BackupEntry(backup_id=backup_id, state="complete", manifest=manifest,
                           verification=Verification.model_validate(raw) if raw else None)
    complete = complete_backups(store, bucket, cluster)
    if not complete:
        raise PreconditionFailed(f"no complete backup of {cluster} in {bucket}")
    return complete[-1]


def write_verification(store: ObjectStore, bucket: str, cluster: str, verification: Verification) -> None:
    """Record the latest restore verification's verdict beside the backup."""
    key = backup_prefix(cluster, verification.backup_id) + VERIFICATION
    store.put_bytes(bucket, key, verification.model_dump_json(indent=2).encode())


def delete_backup(store: ObjectStore, bucket: str, cluster: str, backup_id: str) -> int:
    """Delete a backup: its manifest first (so it stops being offered), then the rest.

    Returns how many objects were deleted; unfinished uploads under it are aborted too.
    """
    prefix = backup_prefix(cluster, backup_id)
    keys = [o.key for o in store.list(bucket, prefix)]
    manifest = prefix + MANIFEST
    deleted = store.delete(bucket, [manifest]) if manifest in keys else 0
    rest = [k for k in keys if k != manifest]
    if rest:
        deleted += store.delete(bucket, rest)
    store.abort_pending_uploads(bucket, prefix)
    return deleted


def cleanup_orphans(
    store: ObjectStore, bucket: str, cluster: str, *, grace_seconds: float = 600,
    now: datetime | None = None, dry_run: bool = False,
) -> OrphanCleanup:
    """Remove interrupted backups (stale heartbeat, or lone unfinished uploads) of ``cluster``."""
    result = OrphanCleanup(bucket=bucket, dry_run=dry_run)
    for entry in list_backups(store, bucket, cluster, now=now, grace_seconds=grace_seconds, with_manifests=False):
        if entry.state == "unrecognised":
            result.left_alone.append(entry.backup_id)
            continue
        if entry.state != "interrupted":
            continue
        result.removed.append(entry.backup_id)
        result.objects_deleted += len(entry.object_keys)
        result.uploads_aborted += entry.pending_uploads
        if not dry_run:
            delete_backup(store, bucket, cluster, entry.backup_id)
            log.info("removed interrupted backup %s of %s from %s", entry.backup_id, cluster, bucket)
    return result


class HeartbeatWriter:
    """Refresh ``in-progress.json`` every ``interval`` seconds from a background thread.

    The heartbeat is what tells the next backup that this one is alive; once it goes
    stale the prefix counts as interrupted.  Write failures are logged, not raised:
    the upload itself will fail loudly if the store is really gone.
    """

    def __init__(self, store: ObjectStore, bucket: str, cluster: str, backup_id: str, interval: float = 15,
                 writer: str = ""):
        import threading

        self._store, self._bucket = store, bucket
        self.key = backup_prefix(cluster, backup_id) + HEARTBEAT
        self._beat = Heartbeat(backup_id=backup_id, started_at=datetime.now(timezone.utc),
                               beat_at=datetime.now(timezone.utc), writer=writer)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{backup_id}", daemon=True)

    def beat(self) -> None:
        """Write the heartbeat now."""
        self._beat.beat_at = datetime.now(timezone.utc)
        self._store.put_bytes(self._bucket, self.key, self._beat.model_dump_json().encode())

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.beat()
            except Exception as exc:  # noqa: BLE001 - see the class docstring
                log.warning("could not refresh heartbeat %s: %s", self.key, exc)

    def __enter__(self) -> HeartbeatWriter:
        self.beat()  # synchronously: it must exist before the first part is uploaded
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop refreshing (idempotent)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def remove(self) -> None:
        """Stop and delete the heartbeat (the work it announced is complete)."""
        self.stop()
        self._store.delete(self._bucket, [self.key])
