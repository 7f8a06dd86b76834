"""What a backup is: its manifest, its objects and where they live in a bucket.

Layout under a bucket (one prefix per backup, ids sort by time)::

    backups/<cluster>/<backup_id>/base.tar.zst.000   volumes of one pg_basebackup tar stream
    backups/<cluster>/<backup_id>/wal-tail.tar.gz    WAL from the backup's end to its fingerprint point
    backups/<cluster>/<backup_id>/in-progress.json   heartbeat while the backup (or a copy) runs
    backups/<cluster>/<backup_id>/manifest.json      written last: the backup is complete
    backups/<cluster>/<backup_id>/verification.json  the latest restore verification's verdict
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, Field

from regionops.lsn import Lsn
from regionops.topology import Cluster, Topology
from regionops.units import human_bytes  # noqa: F401 - re-exported for the restore modules

Compression = Literal["none", "gzip", "lz4", "zstd"]
CompressOn = Literal["client", "server"]
SUFFIX: dict[str, str] = {"none": "", "gzip": ".gz", "lz4": ".lz4", "zstd": ".zst"}

ROOT = "backups"
MANIFEST = "manifest.json"
HEARTBEAT = "in-progress.json"
VERIFICATION = "verification.json"
WAL_TAIL = "wal-tail.tar.gz"
FORMAT_VERSION = 1


def cluster_prefix(cluster: str) -> str:
    """Prefix of every backup of ``cluster``."""
    return f"{ROOT}/{cluster}/"


def backup_prefix(cluster: str, backup_id: str) -> str:
    """Prefix of one backup's objects."""
    return f"{cluster_prefix(cluster)}{backup_id}/"


def volume_key(cluster: str, backup_id: str, compression: Compression, volume: int) -> str:
    """Key of volume ``volume`` of the base backup's tar stream."""
    return f"{backup_prefix(cluster, backup_id)}base.tar{SUFFIX[compression]}.{volume:03d}"


def new_backup_id(now: datetime) -> str:
    """A sortable id from the start time: ``20260102T030405Z``."""
    return now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def home_region(topology: Topology, cluster: Cluster) -> str:
    """The region whose bucket holds a cluster's backups: that of its highest-priority node.

    The designated primary's region is stable across failovers, so backups do not
    wander between buckets when the primary moves.
    """
    name = max(cluster.nodes.items(), key=lambda item: (item[1].priority, item[0]))[0]
    return cluster.nodes[name].region


class StoredObject(BaseModel):
    """One object of a backup with the sha256 of its bytes."""

    key: str
    kind: Literal["base", "wal"]
    size: int
    sha256: str


class TableFingerprint(BaseModel):
    """Row count and an order-independent checksum of one table."""

    rows: int
    checksum: str


class RecoveryTarget(BaseModel):
    """Where recovery of this backup stops: the fingerprint point, or the end of the backup."""

    kind: Literal["name", "immediate"]
    name: str | None = None
    lsn: Lsn | None = None

    def settings(self) -> dict[str, str]:
        """The recovery_target_* settings that make PostgreSQL stop exactly here."""
        if self.kind == "name":
            return {"recovery_target_name": str(self.name)}
        return {"recovery_target": "immediate"}

    def describe(self) -> str:
        """Human words for the target."""
        if self.kind == "name":
            return f"restore point {self.name} at {self.lsn}"
        return "the end of the backup"


class BackupManifest(BaseModel):
    """Everything needed to find, check and restore one backup."""

    format: int = FORMAT_VERSION
    backup_id: str
    cluster: str
    topology: str
    source_node: str
    source_role: str
    home_region: str = Field(description="region whose bucket the backup was taken into")
    server_version: int = Field(description="server_version_num of the source, e.g. 150018")
    system_identifier: str
    timeline: int
    start_lsn: Lsn
    end_lsn: Lsn
    started_at: datetime
    finished_at: datetime
    size_before: int = Field(description="bytes pg_basebackup streamed before compression (kB precision)")
    size_after: int = Field(description="bytes stored, every object together")
    compression: Compression
    compression_level: int | None = None
    compress_on: CompressOn = "client"
    pg_manifest: bool = Field(description="backup_manifest is inside the archive, so pg_verifybackup can run")
    objects: list[StoredObject]
    fingerprint: dict[str, TableFingerprint] = {}
    fingerprint_note: str | None = Field(None, description="why no fingerprint was recorded, when none was")
    recovery_target: RecoveryTarget

    @property
    def base_objects(self) -> list[StoredObject]:
        """The tar stream's volumes, in order."""
        return [o for o in self.objects if o.kind == "base"]

    @property
    def wal_objects(self) -> list[StoredObject]:
        """The WAL tail (empty when the backup stops at its own end)."""
        return [o for o in self.objects if o.kind == "wal"]

    def sentence(self) -> str:
        """``backup 20260102T030405Z of core from us-1: 1.2 GiB → 310 MiB zstd, 0/5000060..0/6000000``."""
        return (
            f"backup {self.backup_id} of {self.cluster} from {self.source_node}: "
            f"{human_bytes(self.size_before)} → {human_bytes(self.size_after)} {self.compression}, "
            f"{self.start_lsn}..{self.end_lsn}"
        )


class Verification(BaseModel):
    """The verdict of the latest restore verification of a backup."""

    backup_id: str
    status: Literal["passed", "failed"]
    at: datetime
    restore_seconds: float | None = None
    detail: str = ""
    flow_run: str | None = None

