"""Fences: a record, shared by every worker and runbook, that a node must not be written to,
promoted, re-pointed to or named by the writer record.

A failover fences the old primary.  It makes it refuse writes and stops it when it can,
but an old primary that is only unreachable (frozen, partitioned) can neither be told
nor stopped: the fence is then this record alone.  Every runbook reads it before it
promotes a node, resyncs from it or points the writer record at it, and region health
reads it to catch a fenced node that came back accepting writes (split brain).

The records live in the cluster's *home bucket* (the bucket of the region of its
highest-priority node, where its backups go), under ``fences/<cluster>/<node>.json``, so
a runbook started on any region's worker sees the same fences.  They are written with
S3 conditional writes (``If-None-Match: *``): when two runs fence the same node, the
first record wins and the second reads and keeps it, never overwriting who fenced first.

A fence is cleared only by a replica resync that verified the node streams from the
primary again, or by a deliberate unfence (``regionops fence clear``).  Clearing keeps
the record under ``fences/<cluster>/cleared/`` with who cleared it and why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from regionops.drivers.objectstore import ObjectExists, ObjectNotFound, ObjectStore, objectstore_for
from regionops.lsn import Lsn
from regionops.topology import Topology, home_region

log = logging.getLogger(__name__)

PREFIX = "fences"


class Fencer(BaseModel):
    """Who acted on a fence: the runbook and its run, and the worker (region, host) it ran on."""

    runbook: str
    run_name: str | None = None
    run_id: str | None = None
    run_url: str | None = None
    worker_region: str | None = None
    worker_host: str | None = None

    def sentence(self) -> str:
        run = f" run {self.run_name}" if self.run_name else ""
        link = f" ({self.run_url})" if self.run_url else ""
        where = f" on {self.worker_host}" if self.worker_host else ""
        region = f" in region {self.worker_region}" if self.worker_region else ""
        return f"{self.runbook}{run}{link}{where}{region}"


class FenceMarker(BaseModel):
    """Why, when and by whom a node was fenced, and what was known about it then."""

    cluster: str
    node: str
    fenced_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    stopped: bool = Field(description="the node was stopped (True) or could only be marked (False)")
    read_only: bool | None = Field(None, description="it was made to refuse writes over SQL first")
    reason: str
    last_lsn: Lsn | None = None
    timeline: int | None = None
    by: Fencer | None = Field(None, description="the run (and worker) that fenced it")

    def sentence(self) -> str:
        how = "stopped and marked fenced" if self.stopped else "marked fenced (it could not be stopped)"
        who = f" by {self.by.sentence()}" if self.by else ""
        return f"{self.node} of {self.cluster} was {how} at {self.fenced_at:%Y-%m-%d %H:%M:%S} UTC{who}: {self.reason}"


class FenceWrite(BaseModel):
    """The fence record after a fencing attempt: ours, or the one another run wrote first."""

    marker: FenceMarker
    created: bool = Field(description="our record was written (False: an earlier fence was kept)")
    location: str

    def sentence(self) -> str:
        if self.created:
            return f"fence recorded at {self.location}: {self.marker.sentence()}"
        return f"{self.marker.node} was already fenced (the earlier record at {self.location} is kept): " + (
            self.marker.sentence()
        )


class FenceCleared(BaseModel):
    """A fence removed, with the record it removed and who removed it why."""

    marker: FenceMarker
    cleared_by: Fencer
    reason: str
    cleared_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    archived_at: str

    def sentence(self) -> str:
        return (
            f"cleared the fence of {self.marker.node} ({self.reason}) by {self.cleared_by.sentence()}; "
            f"it had been fenced at {self.marker.fenced_at:%Y-%m-%d %H:%M:%S} UTC"
            + (f" by {self.marker.by.sentence()}" if self.marker.by else "")
            + f"; the record is kept at {self.archived_at}"
        )


def home_bucket(topology: Topology, cluster: str) -> str:
    """The bucket of the cluster's home region: where its fences (and backups) live."""
    return topology.regions[home_region(topology.clusters[cluster])].bucket


class FenceStore:
    """The fence records of an environment, in each cluster's home bucket."""

    def __init__(self, store: ObjectStore, bucket_for: Callable[[str], str]):
        self.store = store
        self.bucket_for = bucket_for

    @classmethod
    def for_topology(cls, topology: Topology) -> FenceStore:
        """Records in each cluster's home bucket, through the topology's object store."""
        return cls(objectstore_for(topology), lambda cluster: home_bucket(topology, cluster))

    @staticmethod
    def key(cluster: str, node: str) -> str:
        """The object key of a node's fence record."""
        return f"{PREFIX}/{cluster}/{node}.json"

    def location(self, cluster: str, node: str) -> str:
        """Where a node's record lives, for reports."""
        return f"s3://{self.bucket_for(cluster)}/{self.key(cluster, node)}"

    def mark(self, marker: FenceMarker) -> FenceWrite:
        """Record the fence unless one exists; an existing record is kept and returned.

        A create-only write (``If-None-Match: *``): of two runs fencing the same node,
        the first record wins, so the report always names who fenced first.
        """
        bucket, key = self.bucket_for(marker.cluster), self.key(marker.cluster, marker.node)
        location = self.location(marker.cluster, marker.node)
        for _ in range(3):  # a record cleared between our refused write and our read: write again
            try:
                self.store.put_bytes(
                    bucket,
                    key,
                    marker.model_dump_json(indent=2).encode(),
                    content_type="application/json",
                    if_absent=True,
                )
                log.info("fenced %s of %s: %s", marker.node, marker.cluster, location)
                return FenceWrite(marker=marker, created=True, location=location)
            except ObjectExists:
                theirs = self.get(marker.cluster, marker.node)
                if theirs is not None:
                    # Our own record (a retried request whose first answer was lost) counts as ours.
                    return FenceWrite(marker=theirs, created=theirs == marker, location=location)
        raise ObjectExists(bucket, key)

    def get(self, cluster: str, node: str) -> FenceMarker | None:
        """The node's fence record, if it is fenced."""
        try:
            data = self.store.get_bytes(self.bucket_for(cluster), self.key(cluster, node))
        except ObjectNotFound:
            return None
        return FenceMarker.model_validate_json(data)

    def fenced(self, cluster: str) -> dict[str, FenceMarker]:
        """Every fenced node of ``cluster``."""
        bucket, prefix = self.bucket_for(cluster), f"{PREFIX}/{cluster}/"
        keys = [
            o.key
            for o in self.store.list(bucket, prefix)
            if o.key.endswith(".json") and "/" not in o.key[len(prefix) :]
        ]
        markers = (self.get(cluster, k[len(prefix) : -len(".json")]) for k in keys)
        return {m.node: m for m in markers if m is not None}

    def clear(self, cluster: str, node: str, *, by: Fencer, reason: str) -> FenceCleared | None:
        """Remove the node's fence, keeping the record (and who cleared it why) under ``cleared/``.

        None when the node was not fenced.
        """
        marker = self.get(cluster, node)
        if marker is None:
            return None
        bucket = self.bucket_for(cluster)
        cleared_at = datetime.now(UTC)
        archive = f"{PREFIX}/{cluster}/cleared/{node}-{cleared_at:%Y%m%dT%H%M%S%fZ}.json"
        result = FenceCleared(
            marker=marker, cleared_by=by, reason=reason, cleared_at=cleared_at, archived_at=f"s3://{bucket}/{archive}"
        )
        self.store.put_bytes(
            bucket, archive, result.model_dump_json(indent=2).encode(), content_type="application/json"
        )
        self.store.delete(bucket, [self.key(cluster, node)])
        log.info("cleared the fence of %s of %s: %s", node, cluster, reason)
        return result


class OldPrimaryFence(BaseModel):
    """How a failover fenced the old primary: writes refused, stopped or not, and the fence record."""

    node: str
    read_only: bool = False
    stopped: bool
    notes: list[str]
    record: FenceWrite

    def sentence(self) -> str:
        state = "stopped" if self.stopped else "NOT stopped (unreachable): fenced by record only"
        refused = "writes refused over SQL, " if self.read_only else ""
        return (
            f"fenced {self.node} ({refused}{state}): {'; '.join(self.notes)}; {self.record.sentence()}; "
            f"every runbook and the writer record stay away from it until replica-resync rebuilds it "
            f"or it is unfenced"
        )
