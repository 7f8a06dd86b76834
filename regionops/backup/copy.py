"""Cross-region copies of a finished backup, checked after they land.

Residency is checked first, before any byte moves.  The copy follows the backup's own
protocol in the destination: heartbeat first, objects, then the manifest last, so an
interrupted copy is never offered for restore there either.
"""

from __future__ import annotations

import hashlib
import logging
import time

from pydantic import BaseModel

from regionops.backup.catalog import HeartbeatWriter, delete_backup
from regionops.backup.manifest import MANIFEST, BackupManifest, backup_prefix, human_bytes
from regionops.backup.residency import check_backup_region
from regionops.drivers.objectstore import ObjectNotFound, ObjectStore
from regionops.errors import VerificationFailed
from regionops.topology import Topology

log = logging.getLogger(__name__)


class CopyResult(BaseModel):
    """One backup copied (or found already copied) into one region's bucket."""

    backup_id: str
    region: str
    bucket: str
    objects: int
    bytes: int
    seconds: float
    verified: bool
    already_there: bool = False

    def sentence(self) -> str:
        """One line for the report."""
        if self.already_there:
            return f"backup {self.backup_id} was already in {self.bucket} ({self.region})"
        check = "checksums verified after copy" if self.verified else "not re-read after copy"
        return (
            f"copied backup {self.backup_id} to {self.bucket} ({self.region}): {self.objects} object(s), "
            f"{human_bytes(self.bytes)} in {self.seconds:.1f} s, {check}"
        )


def _sha256_of(store: ObjectStore, bucket: str, key: str) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    for chunk in store.iter_object(bucket, key):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def copy_backup(
    topology: Topology,
    cluster_name: str,
    manifest: BackupManifest,
    *,
    source_bucket: str,
    target_region: str,
    store: ObjectStore,
    verify: bool = True,
    heartbeat_seconds: float = 15,
) -> CopyResult:
    """Copy ``manifest``'s backup into ``target_region``'s bucket.

    Raises ResidencyViolation (nothing copied) when the cluster's residency forbids the
    region, and VerificationFailed naming the object when a checksum does not match.
    """
    region = check_backup_region(topology, cluster_name, target_region, f"copy of backup {manifest.backup_id}")
    bucket = region.bucket
    prefix = backup_prefix(cluster_name, manifest.backup_id)
    started = time.monotonic()
    if store.head(bucket, prefix + MANIFEST) is not None:
        return CopyResult(backup_id=manifest.backup_id, region=target_region, bucket=bucket, objects=0, bytes=0,
                          seconds=0.0, verified=False, already_there=True)
    heartbeat = HeartbeatWriter(store, bucket, cluster_name, manifest.backup_id, heartbeat_seconds, writer="copy")
    with heartbeat:
        try:
            for obj in manifest.objects:
                try:
                    copied = store.copy(source_bucket, obj.key, bucket, dst_region=region.aws_region)
                except ObjectNotFound as exc:
                    raise VerificationFailed(f"copy of backup {manifest.backup_id}: object {exc.key} is missing "
                                             f"in {exc.bucket}") from exc
                if copied.sha256 != obj.sha256 or copied.size != obj.size:
                    raise VerificationFailed(
                        f"copy of backup {manifest.backup_id}: source object s3://{source_bucket}/{obj.key} does not "
                        f"match its manifest (sha256 {copied.sha256[:12]}…, {copied.size} bytes; manifest says "
                        f"{obj.sha256[:12]}…, {obj.size} bytes)"
                    )
                if verify:
                    size, sha = _sha256_of(store, bucket, obj.key)
                    if sha != obj.sha256 or size != obj.size:
                        raise VerificationFailed(
                            f"copy of backup {manifest.backup_id}: s3://{bucket}/{obj.key} differs from the "
                            f"original after the copy (sha256 {sha[:12]}…, {size} bytes)"
                        )
            store.put_bytes(bucket, prefix + MANIFEST, manifest.model_dump_json(indent=2).encode())
        except BaseException:
            heartbeat.stop()
            try:
                delete_backup(store, bucket, cluster_name, manifest.backup_id)
            except Exception as exc:  # noqa: BLE001 - report the copy's failure, not the cleanup's
                log.warning("could not remove the partial copy of %s from %s: %s", manifest.backup_id, bucket, exc)
            raise
        heartbeat.remove()
    return CopyResult(
        backup_id=manifest.backup_id, region=target_region, bucket=bucket, objects=len(manifest.objects),
        bytes=sum(o.size for o in manifest.objects), seconds=time.monotonic() - started, verified=verify,
    )
