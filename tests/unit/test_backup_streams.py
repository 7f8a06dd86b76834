"""Bounded streams: read-ahead, volumes and the WAL-tail tar."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from regionops.backup.streams import HashingReader, IterReader, ReadAhead, tar_gz_chunks, volumes


class Trickle:
    """A pipe-like source with short reads and an optional failure."""

    def __init__(self, data: bytes, step: int = 7000, fail_after: int | None = None):
        self.data, self.pos, self.step, self.fail_after = data, 0, step, fail_after

    def read(self, size: int = -1) -> bytes:
        if self.fail_after is not None and self.pos >= self.fail_after:
            raise OSError("pipe broke")
        n = min(self.step, size if size >= 0 else self.step)
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out


def drain(reader, size=4096) -> bytes:
    out = []
    while chunk := reader.read(size):
        out.append(chunk)
    return b"".join(out)


def test_read_ahead_returns_every_byte_in_order():
    data = bytes(range(256)) * 4000
    ahead = ReadAhead(Trickle(data), chunk_size=10_000, max_buffered=30_000)
    assert drain(ahead) == data
    ahead.close()


def test_read_ahead_reraises_the_producers_error():
    ahead = ReadAhead(Trickle(b"x" * 50_000, fail_after=20_000), chunk_size=5000)
    with pytest.raises(OSError, match="pipe broke"):
        drain(ahead)
    ahead.close()


@pytest.mark.parametrize("length", [0, 1, 99, 100, 101, 1000])
def test_volumes_split_at_the_limit_and_never_yield_an_empty_one(length):
    data = bytes(i % 251 for i in range(length))
    parts = [drain(v, 33) for v in volumes(Trickle(data, step=17), 100)]
    assert b"".join(parts) == data
    assert all(0 < len(p) <= 100 for p in parts)
    assert len(parts) == -(-length // 100)


def test_tar_gz_members_are_streamed_and_readable():
    members = [("pg_wal/A", 1000, lambda: [b"a" * 600, b"a" * 400]), ("pg_wal/B", 512, lambda: [b"b" * 512])]
    raw = HashingReader(IterReader(tar_gz_chunks(members)))
    blob = drain(raw)
    assert raw.size == len(blob)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        assert tar.getnames() == ["pg_wal/A", "pg_wal/B"]
        assert tar.extractfile("pg_wal/A").read() == b"a" * 1000


def test_tar_gz_refuses_a_member_of_the_wrong_size():
    with pytest.raises(ValueError, match="expected 10 bytes, got 3"):
        drain(IterReader(tar_gz_chunks([("x", 10, lambda: [b"abc"])])))
