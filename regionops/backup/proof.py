"""What no backup tool keeps: the data a backup must show when restored, and the verdicts of restores.

pgBackRest stores the backups.  Beside each backup set, in every repository's bucket,
regionops keeps a small JSON **proof record**: the fingerprint (row count and checksum)
of the fingerprint tables, taken on the primary at a named restore point *after* the
backup finished.  A restore that stops at that restore point must show exactly those
rows; restore verification checks it.  Verdicts of restore verifications are kept
beside them (the newest verdict per cluster is what the monitoring publishes).

Layout, under the repository's path (``<repo path>/regionops/<stanza>/``):

- ``proofs/<backup label>.json``         one :class:`BackupProof` per backup set
- ``verifications/<backup label>.json``  the latest :class:`Verification` of that set

The records live in pgBackRest's bucket but outside the stanza's directories, which
pgBackRest owns; expiring a backup leaves its record behind (:meth:`ProofStore.prune`
removes records of labels pgBackRest no longer lists).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel

from regionops.drivers.backupsql import BackupSql
from regionops.drivers.objectstore import ObjectNotFound, ObjectStore, objectstore_for
from regionops.drivers.pgbackrest import Repository, plan_stanza
from regionops.drivers.postgres import conninfo_for
from regionops.errors import RunbookError, TransientError
from regionops.topology import Topology

log = logging.getLogger(__name__)


class TableFingerprint(BaseModel):
    """Row count and an order-independent checksum of one table."""

    rows: int
    checksum: str


class BackupProof(BaseModel):
    """The data a restore of one backup set must show, and where recovery must stop to show it."""

    cluster: str
    label: str  # pgBackRest's backup label, e.g. 20261124-140400F
    backup_type: Literal["full", "diff", "incr"]
    taken_at: datetime
    restore_point: str | None = None  # None: no fingerprint point (see ``note``)
    lsn: str | None = None  # the restore point's LSN
    timeline: int | None = None
    fingerprint: dict[str, TableFingerprint] = {}
    writes_held_ms: float | None = None  # how long the application's writes to the tables waited for the point
    note: str | None = None  # why there is no fingerprint, when there is none

    def sentence(self) -> str:
        """One line for a report."""
        if not self.restore_point:
            return f"backup {self.label}: no fingerprint point ({self.note or 'none taken'})"
        tables = ", ".join(f"{t} {f.rows} rows" for t, f in self.fingerprint.items())
        held = f"; writes held {self.writes_held_ms:.0f} ms" if self.writes_held_ms is not None else ""
        return f"backup {self.label}: fingerprint at restore point {self.restore_point} ({self.lsn}): {tables}{held}"


class Verification(BaseModel):
    """The verdict of the latest restore verification of a backup set."""

    cluster: str
    label: str
    status: Literal["passed", "failed"]
    at: datetime
    target: str = ""  # what recovery stopped at, e.g. "name regionops-core-20261124-140400F"
    restore_seconds: float | None = None
    detail: str = ""
    flow_run: str | None = None


def restore_point_name(cluster: str, label: str) -> str:
    """The restore point created after backup ``label`` (unique per cluster and backup)."""
    return f"regionops-{cluster}-{label}"


def take_fingerprint_point(
    topology: Topology,
    cluster_name: str,
    primary: str,
    label: str,
    tables: list[str],
    lock_timeout_ms: int = 3000,
    attempts: int = 3,
) -> BackupProof:
    """On the primary: fix the point under a brief lock (snapshot + restore point), fingerprint from the snapshot.

    Call after the backup finished: recovery can only stop at a point past the backup's
    end.  The restore point is in the WAL; it is only restorable once its segment is
    archived (``pgbackrest check`` on the primary switches WAL and waits for that: the
    caller's part).  A lock that is not granted is retried ``attempts`` times.
    """
    _, cluster = topology.cluster(cluster_name)
    sql = BackupSql(conninfo_for(cluster, cluster.nodes[primary]))
    name = restore_point_name(cluster_name, label)
    for attempt in range(1, attempts + 1):
        try:
            point = sql.fingerprint_point(tables, name, lock_timeout_ms)
            break
        except TransientError:
            if attempt == attempts:
                raise
    return BackupProof(
        cluster=cluster_name,
        label=label,
        backup_type=_type_of(label),
        taken_at=datetime.now(UTC),
        restore_point=point.restore_point,
        lsn=str(point.lsn),
        fingerprint={t: TableFingerprint.model_validate(v) for t, v in point.fingerprint.items()},
        writes_held_ms=point.writes_held_ms,
    )


def _type_of(label: str) -> Literal["full", "diff", "incr"]:
    """pgBackRest labels end in F (full), D (diff) or I (incr)."""
    return {"F": "full", "D": "diff", "I": "incr"}.get(label[-1:], "full")  # type: ignore[return-value]


class ProofStore:
    """Proof records and verdicts of one cluster, in one repository's bucket."""

    def __init__(self, store: ObjectStore, cluster: str, repo: Repository):
        self.store = store
        self.cluster = cluster
        self.repo = repo
        self.prefix = f"{repo.path.strip('/')}/regionops/{cluster}/"

    @classmethod
    def for_cluster(cls, topology: Topology, cluster: str, region: str | None = None) -> ProofStore:
        """The store in the repository of ``region`` (default the home repository, repo1)."""
        plan = plan_stanza(topology, cluster)
        repo = plan.repository(region) if region else plan.repositories[0]
        return cls(objectstore_for(topology), plan.cluster, repo)

    def warm(self) -> ProofStore:
        """Build the S3 client and open its connection now (one listing); returns itself.

        A boto3 client takes up to a second or two to build on a busy host: a runbook warms
        its store beside slower work.  A failed listing is only logged; the real calls that
        follow retry or fail on their own.
        """
        try:
            self.labels()
        except RunbookError as exc:
            log.info("warming the proof store of %s in s3://%s failed: %s", self.cluster, self.repo.bucket, exc)
        return self

    def _key(self, kind: str, label: str) -> str:
        return f"{self.prefix}{kind}/{label}.json"

    def put_proof(self, proof: BackupProof) -> str:
        """Store (or replace) the proof record of a backup set; returns its key."""
        key = self._key("proofs", proof.label)
        self.store.put_bytes(self.repo.bucket, key, proof.model_dump_json(indent=2).encode())
        return key

    def proof(self, label: str) -> BackupProof | None:
        """The proof record of ``label``, or None when the backup has none."""
        try:
            return BackupProof.model_validate_json(self.store.get_bytes(self.repo.bucket, self._key("proofs", label)))
        except ObjectNotFound:
            return None

    def record_verification(self, verdict: Verification) -> str:
        """Store the verdict of a restore verification (replacing the earlier one of that set)."""
        key = self._key("verifications", verdict.label)
        self.store.put_bytes(self.repo.bucket, key, verdict.model_dump_json(indent=2).encode())
        return key

    def verification(self, label: str) -> Verification | None:
        """The latest verdict of ``label``, or None when it was never verified."""
        try:
            return Verification.model_validate_json(
                self.store.get_bytes(self.repo.bucket, self._key("verifications", label))
            )
        except ObjectNotFound:
            return None

    def labels(self, kind: Literal["proofs", "verifications"] = "proofs") -> list[str]:
        """Labels that have a record of ``kind``, oldest first (labels sort by time)."""
        objects = self.store.list(self.repo.bucket, f"{self.prefix}{kind}/")
        return sorted(o.key.rsplit("/", 1)[1].removesuffix(".json") for o in objects)

    def prune(self, keep_labels: set[str]) -> list[str]:
        """Delete the records of every label not in ``keep_labels`` (backups pgBackRest expired)."""
        gone = [
            label
            for label in set(self.labels("proofs")) | set(self.labels("verifications"))
            if label not in keep_labels
        ]
        keys = [self._key(kind, label) for label in gone for kind in ("proofs", "verifications")]
        if keys:
            self.store.delete(self.repo.bucket, keys)
        return sorted(gone)


__all__ = [
    "BackupProof",
    "ProofStore",
    "TableFingerprint",
    "Verification",
    "restore_point_name",
    "take_fingerprint_point",
]
