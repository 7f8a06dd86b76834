"""S3ObjectStore against a real moto server over HTTP."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import uuid
from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

from regionops.drivers.aws import s3_client
from regionops.drivers.objectstore import MiB, ObjectNotFound, S3ObjectStore, objectstore_for
from regionops.errors import ExternalSystemError, TransientError
from regionops.topology import Topology, parse_topology


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def topology(endpoint: str) -> Topology:
    return parse_topology(
        {
            "name": "unit",
            "regions": {
                "eu": {
                    "aws_region": "eu-west-1",
                    "residency": "eu",
                    "app_url": "http://eu",
                    "bucket": "unit-eu",
                    "work_pool": "eu",
                },
                "us": {
                    "aws_region": "us-west-2",
                    "residency": "us",
                    "app_url": "http://us",
                    "bucket": "unit-us",
                    "work_pool": "us",
                },
            },
            "clusters": {
                "core": {
                    "nodes": {"eu-1": {"region": "eu", "host": "127.0.0.1", "port": 5432, "data_dir": "/d"}},
                    "writer_record": "writer.core.db.example.com",
                }
            },
            "traffic": {"route53_zone": "db.example.com"},
            "aws": {"endpoint_url": endpoint},
        }
    )


@pytest.fixture(scope="module")
def store(topology: Topology) -> S3ObjectStore:
    return objectstore_for(topology)


def new_bucket(store: S3ObjectStore, region: str = "eu-west-1") -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    assert store.ensure_bucket(name, region) is True
    return name


class TrickleStream:
    """A pipe-like source: short reads, and optionally an error after ``fail_after`` bytes."""

    def __init__(self, data: bytes, max_read: int = MiB, fail_after: int | None = None):
        self._data = io.BytesIO(data)
        self._max_read = max_read
        self._fail_after = fail_after

    def read(self, size: int = -1) -> bytes:
        if self._fail_after is not None and self._data.tell() >= self._fail_after:
            raise OSError("source pipe broke")
        return self._data.read(min(size, self._max_read))


def test_bucket_status_reports_the_region_the_bucket_was_created_in(store: S3ObjectStore) -> None:
    for region in ("eu-west-1", "us-east-1", "ap-southeast-2"):
        bucket = new_bucket(store, region)
        status = store.bucket_status(bucket)
        assert status.reachable and status.region == region
        assert status.sentence() == f"bucket {bucket} in {region} is reachable"
        assert store.ensure_bucket(bucket, region) is False


def test_ensure_bucket_refuses_an_existing_bucket_in_another_region(store: S3ObjectStore) -> None:
    bucket = new_bucket(store, "eu-west-1")
    with pytest.raises(ExternalSystemError, match=f"{bucket} exists in eu-west-1, not in us-west-2"):
        store.ensure_bucket(bucket, "us-west-2")


def test_missing_bucket_is_reported_unreachable_not_raised(store: S3ObjectStore) -> None:
    status = store.bucket_status("no-such-bucket-here")
    assert not status.reachable and status.region is None
    assert "no-such-bucket-here" in status.error
    assert status.sentence().startswith("bucket no-such-bucket-here is unreachable")


def test_multipart_upload_stores_exactly_the_bytes_it_hashed(store: S3ObjectStore) -> None:
    bucket = new_bucket(store)
    data = os.urandom(40 * MiB)
    progress: list[int] = []

    result = store.upload_stream(
        bucket, "base/1.tar", TrickleStream(data), part_size=5 * MiB, on_progress=progress.append
    )

    expected = hashlib.sha256(data).hexdigest()
    assert (result.size, result.parts, result.sha256) == (len(data), 8, expected)
    assert progress == [5 * MiB * i for i in range(1, 9)]
    chunks = list(store.iter_object(bucket, "base/1.tar", chunk_size=4 * MiB))
    assert max(len(c) for c in chunks) <= 4 * MiB
    assert hashlib.sha256(b"".join(chunks)).hexdigest() == expected
    assert store.head(bucket, "base/1.tar").size == len(data)


def test_upload_of_a_partial_last_part_and_of_an_empty_stream(store: S3ObjectStore) -> None:
    bucket = new_bucket(store)
    data = os.urandom(7 * MiB + 3)
    result = store.upload_stream(bucket, "odd", io.BytesIO(data), part_size=5 * MiB)
    assert result.parts == 2 and store.get_bytes(bucket, "odd") == data

    empty = store.upload_stream(bucket, "empty", io.BytesIO(b""), part_size=5 * MiB)
    assert empty.size == 0 and empty.sha256 == hashlib.sha256(b"").hexdigest()
    assert store.get_bytes(bucket, "empty") == b""


def test_a_stream_failing_halfway_leaves_no_upload_and_no_object(store: S3ObjectStore) -> None:
    bucket = new_bucket(store)
    stream = TrickleStream(os.urandom(20 * MiB), fail_after=12 * MiB)

    with pytest.raises(ExternalSystemError, match=f"s3://{bucket}/base/broken.tar.*source pipe broke") as err:
        store.upload_stream(bucket, "base/broken.tar", stream, part_size=5 * MiB)

    assert isinstance(err.value.__cause__, OSError)
    assert store.pending_uploads(bucket) == []
    assert store.head(bucket, "base/broken.tar") is None


def test_abort_pending_uploads_cleans_orphaned_parts_under_the_prefix(store: S3ObjectStore, topology: Topology) -> None:
    bucket = new_bucket(store)
    raw = s3_client(topology, "eu-west-1")
    orphan = raw.create_multipart_upload(Bucket=bucket, Key="base/2.tar")["UploadId"]
    raw.upload_part(Bucket=bucket, Key="base/2.tar", UploadId=orphan, PartNumber=1, Body=b"x" * MiB)
    other = raw.create_multipart_upload(Bucket=bucket, Key="wal/0001")["UploadId"]

    assert store.pending_uploads(bucket, "base/") == [("base/2.tar", orphan)]
    assert store.abort_pending_uploads(bucket, "base/") == 1
    assert store.pending_uploads(bucket, "base/") == []
    assert store.pending_uploads(bucket) == [("wal/0001", other)]


def test_missing_key_raises_object_not_found_naming_it(store: S3ObjectStore) -> None:
    bucket = new_bucket(store)
    with pytest.raises(ObjectNotFound, match=f"s3://{bucket}/base/nope.tar") as err:
        store.get_bytes(bucket, "base/nope.tar")
    assert (err.value.bucket, err.value.key) == (bucket, "base/nope.tar")
    assert err.value.__cause__ is not None
    with pytest.raises(ObjectNotFound):
        list(store.iter_object(bucket, "base/nope.tar"))
    assert store.head(bucket, "base/nope.tar") is None


def test_copy_across_regions_yields_identical_bytes(store: S3ObjectStore) -> None:
    src, dst = new_bucket(store, "eu-west-1"), new_bucket(store, "us-west-2")
    data = os.urandom(11 * MiB)
    store.upload_stream(src, "base/3.tar", io.BytesIO(data), part_size=5 * MiB)

    result = store.copy(src, "base/3.tar", dst, "copies/3.tar", "us-west-2", part_size=5 * MiB)

    assert result.sha256 == hashlib.sha256(data).hexdigest() and result.parts == 3
    assert store.get_bytes(dst, "copies/3.tar") == data
    assert store.bucket_status(dst).region == "us-west-2"


def test_put_list_and_delete(store: S3ObjectStore) -> None:
    bucket = new_bucket(store)
    for key in ("base/a", "base/b", "wal/c"):
        store.put_bytes(bucket, key, key.encode(), metadata={"origin": "test"})

    assert [(o.key, o.size) for o in store.list(bucket, "base/")] == [("base/a", 6), ("base/b", 6)]
    assert store.delete(bucket, ["base/a", "base/b"]) == 2
    assert [o.key for o in store.list(bucket)] == ["wal/c"]
    assert store.delete(bucket, []) == 0


def test_unreachable_endpoint_is_transient() -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = boto3.session.Session().client(
        "s3",
        region_name="eu-west-1",
        endpoint_url=dead,
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(connect_timeout=1, retries={"total_max_attempts": 1}),
    )
    store = S3ObjectStore(lambda region: client)

    with pytest.raises(TransientError, match="s3://any/key"):
        store.get_bytes("any", "key")
    status = store.bucket_status("any")
    assert not status.reachable and "Could not connect" in status.error
