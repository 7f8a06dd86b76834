"""Backups' home: S3 buckets, one per region, reached through :mod:`regionops.drivers.aws`.

Large objects never sit whole in memory: uploads go part by part through an S3
multipart upload (hashing as they go) and downloads are iterated in chunks.  A failed
upload is aborted so no orphaned parts keep costing money; :meth:`S3ObjectStore.abort_pending_uploads`
cleans what an interrupted process left behind.  botocore's errors become project
errors here, each naming the bucket and key.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from regionops.drivers.aws import error_code, s3_client, translate_error
from regionops.errors import ExternalSystemError, RunbookError
from regionops.model.probes import BucketStatus
from regionops.topology import Topology

log = logging.getLogger(__name__)

MiB = 1024 * 1024
DEFAULT_PART_SIZE = 16 * MiB
# S3's limits: every part but the last is at least 5 MiB; at most 10,000 parts.
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * 1024 * MiB
MAX_PARTS = 10_000
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
# A create-only write lost: 412 when the key exists, 409 when a concurrent write to it is in flight.
_EXISTS_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})


class ObjectNotFound(ExternalSystemError):
    """The bucket has no object under this key."""

    def __init__(self, bucket: str, key: str):
        self.bucket = bucket
        self.key = key
        super().__init__(f"s3://{bucket}/{key} does not exist")


class ObjectExists(ExternalSystemError):
    """A create-only write (``If-None-Match: *``) found an object already under the key."""

    def __init__(self, bucket: str, key: str):
        self.bucket = bucket
        self.key = key
        super().__init__(f"s3://{bucket}/{key} already exists (conditional write refused)")


class ObjectInfo(BaseModel):
    """One stored object."""

    key: str
    size: int
    etag: str
    last_modified: datetime | None = None


class UploadResult(BaseModel):
    """A finished upload: where, how big, and the sha256 of the bytes sent."""

    bucket: str
    key: str
    size: int
    sha256: str
    parts: int


class Readable(Protocol):
    """A binary file-like source: an open file, a subprocess pipe, a response body."""

    def read(self, size: int = -1, /) -> bytes: ...


class ObjectStore(Protocol):
    """Bucket and object operations the runbooks need.  Tests may inject another."""

    def bucket_status(self, bucket: str) -> BucketStatus: ...
    def ensure_bucket(self, bucket: str, aws_region: str) -> bool: ...
    def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        metadata: dict[str, str] | None = None,
        *,
        content_type: str | None = None,
        cache_control: str | None = None,
        if_absent: bool = False,
    ) -> ObjectInfo: ...
    def head_metadata(self, bucket: str, key: str) -> dict[str, str] | None: ...
    def get_bytes(self, bucket: str, key: str) -> bytes: ...
    def iter_object(self, bucket: str, key: str, chunk_size: int = MiB) -> Iterator[bytes]: ...
    def head(self, bucket: str, key: str) -> ObjectInfo | None: ...
    def delete(self, bucket: str, keys: Iterable[str]) -> int: ...
    def upload_stream(
        self,
        bucket: str,
        key: str,
        stream: Readable,
        part_size: int = DEFAULT_PART_SIZE,
        on_progress: Callable[[int], None] | None = None,
    ) -> UploadResult: ...
    def pending_uploads(self, bucket: str, prefix: str = "") -> list[tuple[str, str]]: ...
    def abort_pending_uploads(self, bucket: str, prefix: str = "") -> int: ...
    def copy(
        self, src_bucket: str, key: str, dst_bucket: str, dst_key: str | None = None, dst_region: str | None = None
    ) -> UploadResult: ...
    def list(self, bucket: str, prefix: str = "") -> builtins.list[ObjectInfo]: ...


def _where(bucket: str, key: str | None = None) -> str:
    return f"s3://{bucket}/{key}" if key is not None else f"bucket {bucket}"


@contextmanager
def _s3_errors(bucket: str, key: str | None = None) -> Iterator[None]:
    """Translate botocore errors raised inside the block, naming bucket and key."""
    try:
        yield
    except ClientError as exc:
        if key is not None and error_code(exc) in _NOT_FOUND_CODES:
            raise ObjectNotFound(bucket, key) from exc
        raise translate_error(exc, _where(bucket, key)) from exc
    except BotoCoreError as exc:
        raise translate_error(exc, _where(bucket, key)) from exc


def _read_part(stream: Readable, size: int) -> bytes:
    """Up to ``size`` bytes; fewer only at end of stream (pipes return short reads)."""
    pieces: list[bytes] = []
    missing = size
    while missing > 0:
        piece = stream.read(missing)
        if not piece:
            break
        pieces.append(piece)
        missing -= len(piece)
    return b"".join(pieces)


class _TranslatingReader:
    """A response body whose read errors name the object being read, not the upload target."""

    def __init__(self, body: Any, bucket: str, key: str):
        self._body, self._bucket, self._key = body, bucket, key

    def read(self, size: int = -1) -> bytes:
        with _s3_errors(self._bucket, self._key):
            return self._body.read(size)


def _info(key: str, meta: dict[str, Any], size_field: str) -> ObjectInfo:
    return ObjectInfo(
        key=key,
        size=int(meta.get(size_field) or 0),
        etag=str(meta.get("ETag", "")).strip('"'),
        last_modified=meta.get("LastModified"),
    )


class S3ObjectStore:
    """ObjectStore over S3.  ``client_for(aws_region)`` builds a boto3 S3 client (None: default region)."""

    def __init__(self, client_for: Callable[[str | None], Any], bucket_regions: dict[str, str] | None = None):
        self._client_for = client_for
        self._clients: dict[str | None, Any] = {}
        self._bucket_regions = bucket_regions or {}

    def _region_of(self, bucket: str) -> str | None:
        """The AWS region of a bucket the topology names (its client uses that region's endpoint)."""
        return self._bucket_regions.get(bucket)

    def _bucket_client(self, bucket: str) -> Any:
        """The client for ``bucket``: its region's, so it goes to that region's S3 endpoint."""
        return self._client(self._region_of(bucket))

    def _client(self, aws_region: str | None = None) -> Any:
        # boto3 clients are thread-safe and costly to build: one per region.
        if aws_region not in self._clients:
            self._clients[aws_region] = self._client_for(aws_region)
        return self._clients[aws_region]

    # -- buckets ----------------------------------------------------------------------

    def bucket_status(self, bucket: str) -> BucketStatus:
        """Whether ``bucket`` answers and its region.  Never raises: reports the error instead."""
        try:
            with _s3_errors(bucket):
                self._bucket_client(bucket).head_bucket(Bucket=bucket)
                location = self._bucket_client(bucket).get_bucket_location(Bucket=bucket).get("LocationConstraint")
        except RunbookError as exc:
            log.info("bucket %s is unreachable: %s", bucket, exc)
            return BucketStatus(bucket=bucket, reachable=False, error=str(exc))
        # S3 reports us-east-1 as no constraint, and old eu-west-1 buckets as "EU".
        region = {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)
        return BucketStatus(bucket=bucket, reachable=True, region=region)

    def ensure_bucket(self, bucket: str, aws_region: str) -> bool:
        """Create ``bucket`` in ``aws_region`` unless it exists.  True when it was created.

        An existing bucket in another region is an error: backups there would sit
        outside the region the topology says.
        """
        status = self.bucket_status(bucket)
        if status.reachable:
            if status.region != aws_region:
                raise ExternalSystemError(f"bucket {bucket} exists in {status.region}, not in {aws_region}")
            return False
        params: dict[str, Any] = {"Bucket": bucket}
        if aws_region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": aws_region}
        try:
            with _s3_errors(bucket):
                self._client(aws_region).create_bucket(**params)
        except ExternalSystemError as exc:
            if error_code(exc.__cause__) == "BucketAlreadyOwnedByYou":  # lost a race with ourselves
                return False
            raise
        log.info("created bucket %s in %s", bucket, aws_region)
        return True

    # -- small objects ------------------------------------------------------------------

    def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        metadata: dict[str, str] | None = None,
        *,
        content_type: str | None = None,
        cache_control: str | None = None,
        if_absent: bool = False,
    ) -> ObjectInfo:
        """Store ``data`` under ``key`` in one request (small objects: manifests, markers, static assets).

        ``if_absent`` makes it a create-only write (S3 conditional write, ``If-None-Match: *``):
        when an object is already there, nothing is written and :class:`ObjectExists` is raised.
        """
        extra = {
            k: v
            for k, v in (
                ("ContentType", content_type),
                ("CacheControl", cache_control),
                ("IfNoneMatch", "*" if if_absent else None),
            )
            if v
        }
        try:
            with _s3_errors(bucket, key):
                client = self._bucket_client(bucket)
                reply = client.put_object(Bucket=bucket, Key=key, Body=data, Metadata=metadata or {}, **extra)
        except RunbookError as exc:
            if if_absent and error_code(exc.__cause__) in _EXISTS_CODES:
                raise ObjectExists(bucket, key) from exc.__cause__
            raise
        return ObjectInfo(key=key, size=len(data), etag=reply["ETag"].strip('"'), last_modified=None)

    def head_metadata(self, bucket: str, key: str) -> dict[str, str] | None:
        """The object's user metadata plus ``content-type`` and ``cache-control``; None when absent."""
        try:
            with _s3_errors(bucket, key):
                reply = self._bucket_client(bucket).head_object(Bucket=bucket, Key=key)
        except ObjectNotFound:
            return None
        meta = {k.lower(): v for k, v in (reply.get("Metadata") or {}).items()}
        meta["content-type"] = reply.get("ContentType", "")
        meta["cache-control"] = reply.get("CacheControl", "")
        return meta

    def get_bytes(self, bucket: str, key: str) -> bytes:
        """The whole object in memory (small objects only; see :meth:`iter_object`)."""
        with _s3_errors(bucket, key):
            return self._bucket_client(bucket).get_object(Bucket=bucket, Key=key)["Body"].read()

    def iter_object(self, bucket: str, key: str, chunk_size: int = MiB) -> Iterator[bytes]:
        """The object's bytes in chunks of at most ``chunk_size``, read as they are consumed."""
        with _s3_errors(bucket, key):
            body = self._bucket_client(bucket).get_object(Bucket=bucket, Key=key)["Body"]
        try:
            with _s3_errors(bucket, key):
                yield from body.iter_chunks(chunk_size)
        finally:
            body.close()

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        """The object's size and etag, or None when there is no such key."""
        try:
            with _s3_errors(bucket, key):
                reply = self._bucket_client(bucket).head_object(Bucket=bucket, Key=key)
        except ObjectNotFound:
            return None
        return _info(key, reply, "ContentLength")

    def delete(self, bucket: str, keys: Iterable[str]) -> int:
        """Delete ``keys``; returns how many S3 reports deleted (absent keys count as deleted)."""
        keys = builtins.list(keys)
        deleted = 0
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = keys[start : start + 1000]
            with _s3_errors(bucket):
                reply = self._bucket_client(bucket).delete_objects(
                    Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": False}
                )
            if reply.get("Errors"):
                first = reply["Errors"][0]
                raise ExternalSystemError(
                    f"s3://{bucket}/{first['Key']}: {first.get('Code')}: {first.get('Message')} "
                    f"({len(reply['Errors'])} key(s) not deleted)"
                )
            deleted += len(reply.get("Deleted", []))
        return deleted

    # -- large objects ------------------------------------------------------------------

    def upload_stream(
        self,
        bucket: str,
        key: str,
        stream: Readable,
        part_size: int = DEFAULT_PART_SIZE,
        on_progress: Callable[[int], None] | None = None,
    ) -> UploadResult:
        """Upload ``stream`` part by part as a multipart upload; aborted if anything fails.

        Memory stays around one part.  ``on_progress`` gets the bytes sent so far after
        each part.  The sha256 covers the whole stream.
        """
        return self._upload(self._bucket_client(bucket), bucket, key, stream, part_size, on_progress)

    def _upload(
        self,
        client: Any,
        bucket: str,
        key: str,
        stream: Readable,
        part_size: int,
        on_progress: Callable[[int], None] | None,
    ) -> UploadResult:
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ValueError(f"part_size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes")
        digest = hashlib.sha256()
        parts: list[dict[str, Any]] = []
        size = 0
        upload_id: str | None = None
        try:
            while True:
                chunk = _read_part(stream, part_size)
                if not chunk:
                    break
                if len(parts) == MAX_PARTS:
                    raise ExternalSystemError(
                        f"s3://{bucket}/{key}: stream exceeds {MAX_PARTS} parts of {part_size} bytes"
                    )
                with _s3_errors(bucket, key):
                    if upload_id is None:
                        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
                    reply = client.upload_part(
                        Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=len(parts) + 1, Body=chunk
                    )
                parts.append({"PartNumber": len(parts) + 1, "ETag": reply["ETag"]})
                digest.update(chunk)
                size += len(chunk)
                if on_progress:
                    on_progress(size)
                if len(chunk) < part_size:
                    break
            with _s3_errors(bucket, key):
                if upload_id is None:
                    # A multipart upload needs at least one part; S3-compatible servers
                    # disagree on whether an empty one counts, so store the empty object directly.
                    client.put_object(Bucket=bucket, Key=key, Body=b"")
                else:
                    client.complete_multipart_upload(
                        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                    )
        except BaseException as exc:
            if upload_id is not None:
                self._abort(client, bucket, key, upload_id)
            if isinstance(exc, RunbookError) or not isinstance(exc, Exception):
                raise  # project errors as they are; interrupts and cancellation untouched
            raise ExternalSystemError(
                f"s3://{bucket}/{key}: upload aborted after {size} bytes: {type(exc).__name__}: {exc}"
            ) from exc
        log.info("uploaded s3://%s/%s: %d bytes in %d part(s)", bucket, key, size, len(parts))
        return UploadResult(bucket=bucket, key=key, size=size, sha256=digest.hexdigest(), parts=len(parts))

    def _abort(self, client: Any, bucket: str, key: str, upload_id: str) -> None:
        """Abort a multipart upload, logging (not raising) a failure: the caller has a better error."""
        try:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            log.info("aborted multipart upload %s of s3://%s/%s", upload_id, bucket, key)
        except (ClientError, BotoCoreError) as exc:
            log.warning(
                "could not abort multipart upload %s of s3://%s/%s (abort_pending_uploads cleans it): %s",
                upload_id,
                bucket,
                key,
                exc,
            )

    def pending_uploads(self, bucket: str, prefix: str = "") -> list[tuple[str, str]]:
        """Unfinished multipart uploads under ``prefix`` as (key, upload_id)."""
        found: list[tuple[str, str]] = []
        with _s3_errors(bucket):
            paginator = self._bucket_client(bucket).get_paginator("list_multipart_uploads")
            pages = paginator.paginate(Bucket=bucket, Prefix=prefix)
            for page in pages:
                found += [(u["Key"], u["UploadId"]) for u in page.get("Uploads", [])]
        # Filter again: not every S3-compatible server honours Prefix here.
        return [(k, u) for k, u in found if k.startswith(prefix)]

    def abort_pending_uploads(self, bucket: str, prefix: str = "") -> int:
        """Abort every unfinished multipart upload under ``prefix`` (orphaned parts).  Returns how many."""
        pending = self.pending_uploads(bucket, prefix)
        for key, upload_id in pending:
            with _s3_errors(bucket, key):
                self._bucket_client(bucket).abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            log.info("aborted orphaned multipart upload %s of s3://%s/%s", upload_id, bucket, key)
        return len(pending)

    def copy(
        self,
        src_bucket: str,
        key: str,
        dst_bucket: str,
        dst_key: str | None = None,
        dst_region: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
    ) -> UploadResult:
        """Copy an object by streaming it through this process into ``dst_bucket``.

        Server-side CopyObject cannot cross endpoints or accounts, and this yields the
        sha256 of the bytes actually copied.
        """
        dst_key = dst_key or key
        with _s3_errors(src_bucket, key):
            body = self._bucket_client(src_bucket).get_object(Bucket=src_bucket, Key=key)["Body"]
        try:
            source = _TranslatingReader(body, src_bucket, key)
            client = self._client(dst_region or self._region_of(dst_bucket))
            return self._upload(client, dst_bucket, dst_key, source, part_size, None)
        finally:
            body.close()

    def list(self, bucket: str, prefix: str = "") -> builtins.list[ObjectInfo]:
        """Every object under ``prefix``, in key order."""
        objects: builtins.list[ObjectInfo] = []
        with _s3_errors(bucket):
            paginator = self._bucket_client(bucket).get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                objects += [_info(o["Key"], o, "Size") for o in page.get("Contents", [])]
        return objects


def objectstore_for(topology: Topology) -> S3ObjectStore:
    """The S3 object store of ``topology`` (endpoint and credentials from ``topology.aws``)."""
    regions = {r.bucket: r.aws_region for r in topology.regions.values()}
    return S3ObjectStore(lambda aws_region: s3_client(topology, aws_region), regions)
