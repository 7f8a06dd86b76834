"""The backup catalog against a real moto S3 server: states, orphans, deletion order, copies."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from moto.server import ThreadedMotoServer

from regionops.backup import catalog
from regionops.backup.manifest import (
    HEARTBEAT,
    MANIFEST,
    BackupManifest,
    RecoveryTarget,
    StoredObject,
    backup_prefix,
)
from regionops.drivers.objectstore import MiB, S3ObjectStore, objectstore_for
from regionops.errors import PreconditionFailed, ResidencyViolation, VerificationFailed
from regionops.topology import Topology, parse_topology

NOW = datetime(2026, 3, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    suffix = uuid.uuid4().hex[:8]
    yield parse_topology({
        "name": "unit",
        "regions": {
            r: {"aws_region": aws, "residency": zone, "app_url": "http://x", "bucket": f"{r}-{suffix}", "work_pool": r}
            for r, aws, zone in [("eu", "eu-west-1", "eu"), ("eu2", "eu-central-1", "eu"), ("us", "us-east-1", "us")]
        },
        "clusters": {"core": {
            "residency": "eu",
            "nodes": {"eu-1": {"region": "eu", "host": "127.0.0.1", "port": 5432, "data_dir": "/d"}},
            "writer_record": "w.core.db.example.com",
        }},
        "traffic": {"route53_zone": "db.example.com"},
        "aws": {"endpoint_url": f"http://127.0.0.1:{port}"},
    })
    server.stop()


@pytest.fixture
def store(topology) -> S3ObjectStore:
    s = objectstore_for(topology)
    for region in topology.regions.values():
        s.ensure_bucket(region.bucket, region.aws_region)
        keys = [o.key for o in s.list(region.bucket)]
        if keys:
            s.delete(region.bucket, keys)
        s.abort_pending_uploads(region.bucket)
    return s


def put_complete(store, bucket: str, backup_id: str, payload: bytes = b"data" * 1000) -> BackupManifest:
    import hashlib

    key = backup_prefix("core", backup_id) + "base.tar.000"
    store.put_bytes(bucket, key, payload)
    m = BackupManifest(
        backup_id=backup_id, cluster="core", topology="unit", source_node="eu-1", source_role="primary",
        home_region="eu", server_version=150000, system_identifier="1", timeline=1, start_lsn="0/1", end_lsn="0/2",
        started_at=NOW, finished_at=NOW, size_before=len(payload), size_after=len(payload), compression="none",
        pg_manifest=True, objects=[StoredObject(key=key, kind="base", size=len(payload),
                                                sha256=hashlib.sha256(payload).hexdigest())],
        recovery_target=RecoveryTarget(kind="immediate"),
    )
    store.put_bytes(bucket, backup_prefix("core", backup_id) + MANIFEST, m.model_dump_json().encode())
    return m


def put_heartbeat(store, bucket: str, backup_id: str, age_seconds: float) -> None:
    beat = catalog.Heartbeat(backup_id=backup_id, started_at=NOW, beat_at=NOW - timedelta(seconds=age_seconds))
    store.put_bytes(bucket, backup_prefix("core", backup_id) + HEARTBEAT, beat.model_dump_json().encode())


def start_upload(store, bucket: str, backup_id: str) -> None:
    """An unfinished multipart upload, as a killed backup leaves it."""
    client = store._client()
    key = backup_prefix("core", backup_id) + "base.tar.001"
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"x" * (5 * MiB))


def test_states_and_cleanup_of_interrupted_backups(topology, store):
    bucket = topology.regions["eu"].bucket
    put_complete(store, bucket, "A")
    put_heartbeat(store, bucket, "B", age_seconds=5)        # running
    start_upload(store, bucket, "B")
    put_heartbeat(store, bucket, "C", age_seconds=3600)     # interrupted
    start_upload(store, bucket, "C")
    store.put_bytes(bucket, backup_prefix("core", "D") + "base.tar.000", b"?")  # no manifest, no heartbeat
    states = {e.backup_id: e.state for e in catalog.list_backups(store, bucket, "core", now=NOW, grace_seconds=600)}
    assert states == {"A": "complete", "B": "running", "C": "interrupted", "D": "unrecognised"}

    dry = catalog.cleanup_orphans(store, bucket, "core", grace_seconds=600, now=NOW, dry_run=True)
    assert dry.removed == ["C"] and dry.uploads_aborted == 1 and dry.left_alone == ["D"]
    assert store.list(bucket, backup_prefix("core", "C")) != []

    done = catalog.cleanup_orphans(store, bucket, "core", grace_seconds=600, now=NOW)
    assert done.removed == ["C"] and "left alone" in done.sentence()
    assert store.list(bucket, backup_prefix("core", "C")) == []
    assert store.pending_uploads(bucket, backup_prefix("core", "C")) == []
    assert store.pending_uploads(bucket, backup_prefix("core", "B")) != []  # a running backup is not touched
    assert [e.backup_id for e in catalog.complete_backups(store, bucket, "core")] == ["A"]


def test_find_backup_newest_or_by_id_and_incomplete_is_refused(topology, store):
    bucket = topology.regions["eu"].bucket
    put_complete(store, bucket, "20260101T000000Z")
    put_complete(store, bucket, "20260102T000000Z")
    put_heartbeat(store, bucket, "20260103T000000Z", age_seconds=1)
    assert catalog.find_backup(store, bucket, "core").backup_id == "20260102T000000Z"
    assert catalog.find_backup(store, bucket, "core", "20260101T000000Z").manifest.backup_id == "20260101T000000Z"
    with pytest.raises(PreconditionFailed, match="20260103T000000Z.*has no manifest.*not offered for restore"):
        catalog.find_backup(store, bucket, "core", "20260103T000000Z")


def test_delete_backup_removes_the_manifest_first_and_everything_else(topology, store):
    bucket = topology.regions["eu"].bucket
    put_complete(store, bucket, "Z")
    store.put_bytes(bucket, backup_prefix("core", "Z") + "extra", b"e" * 10)
    assert catalog.delete_backup(store, bucket, "core", "Z") == 3
    assert store.list(bucket, backup_prefix("core", "Z")) == []
