"""Byte streams with bounded memory: read-ahead, volumes, hashing, and a tar writer.

``ReadAhead`` lets the producer (pg_basebackup writing into a pipe) keep running while
a part is being uploaded, which is what keeps the backup runbook close to raw
pg_basebackup speed; its queue bounds the memory used.  ``Volumes`` cuts one stream
into objects of at most a given size, because one S3 object holds at most 10,000
parts: volumes keep memory per part constant whatever the database size.
"""

from __future__ import annotations

import hashlib
import queue
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator

from regionops.drivers.objectstore import Readable

_EOF = object()


class ReadAhead:
    """Read ``source`` in a background thread into a bounded queue; ``read`` drains it.

    At most ``max_buffered`` bytes (plus one chunk) wait in memory.  An error in the
    reader thread is re-raised by ``read``; ``close`` stops the thread.
    """

    def __init__(self, source: Readable, *, chunk_size: int = 1 << 20, max_buffered: int = 32 << 20):
        self._source = source
        self._chunk_size = chunk_size
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, max_buffered // chunk_size))
        self._pending = b""
        self._closed = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._pump, name="backup-read-ahead", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _pump(self) -> None:
        try:
            while not self._closed.is_set():
                chunk = self._source.read(self._chunk_size)
                if not chunk:
                    break
                if not self._put(chunk):
                    return
            self._put(_EOF)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self._put(exc)

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes (a short read does not mean end of stream; b'' does)."""
        if not self._pending and not self._done:
            item = self._queue.get()
            if item is _EOF:
                self._done = True
            elif isinstance(item, BaseException):
                self._done = True
                raise item
            else:
                self._pending = item  # type: ignore[assignment]
        if size < 0:
            size = len(self._pending)
        out, self._pending = self._pending[:size], self._pending[size:]
        return out

    def close(self) -> None:
        """Stop reading; the thread ends at its next chunk boundary."""
        self._closed.set()
        self._thread.join(timeout=5)


class Peekable:
    """A stream that can tell whether anything is left without losing the byte it read."""

    def __init__(self, source: Readable):
        self._source = source
        self._head = b""

    def at_eof(self) -> bool:
        """True when the stream has no more bytes."""
        if not self._head:
            self._head = self._source.read(1 << 16)
        return not self._head

    def read(self, size: int = -1, /) -> bytes:
        """Like the source's read, serving the peeked bytes first."""
        if self._head:
            n = len(self._head) if size < 0 else size
            out, self._head = self._head[:n], self._head[n:]
            return out
        return self._source.read(size)


class Volume:
    """At most ``limit`` bytes of ``source``: one object's worth of a longer stream."""

    def __init__(self, source: Readable, limit: int):
        self._source = source
        self._left = limit

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes, never past the volume's limit."""
        if self._left <= 0:
            return b""
        size = self._left if size < 0 else min(size, self._left)
        data = self._source.read(size)
        self._left -= len(data)
        return data


def volumes(source: Readable, limit: int) -> Iterator[Volume]:
    """Consecutive volumes of ``source``, each at most ``limit`` bytes; none empty."""
    peek = Peekable(source)
    while not peek.at_eof():
        yield Volume(peek, limit)


class HashingReader:
    """Pass bytes through while computing their sha256 and count."""

    def __init__(self, source: Readable):
        self._source = source
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1, /) -> bytes:
        """Read and account for the bytes."""
        data = self._source.read(size)
        self.sha256.update(data)
        self.size += len(data)
        return data


class IterReader:
    """A Readable over an iterator of byte chunks."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._pending = b""

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes from the chunks."""
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return b""
        n = len(self._pending) if size < 0 else size
        out, self._pending = self._pending[:n], self._pending[n:]
        return out


TarMember = tuple[str, int, Callable[[], Iterable[bytes]]]


def tar_gz_chunks(members: Iterable[TarMember], level: int = 1) -> Iterator[bytes]:
    """A gzip-compressed tar of ``members`` (name, size, chunk source), produced chunk by chunk.

    Each member's bytes are fetched only when the stream reaches it, so memory stays
    at one chunk whatever the members' sizes.  Members must yield exactly ``size`` bytes.
    """
    gz = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: gzip container
    for name, size, fetch in members:
        info = tarfile.TarInfo(name)
        info.size, info.mode = size, 0o600
        yield gz.compress(info.tobuf(format=tarfile.USTAR_FORMAT))
        sent = 0
        for chunk in fetch():
            sent += len(chunk)
            yield gz.compress(chunk)
        if sent != size:
            raise ValueError(f"tar member {name}: expected {size} bytes, got {sent}")
        if size % tarfile.BLOCKSIZE:
            yield gz.compress(b"\0" * (tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE))
    yield gz.compress(b"\0" * (2 * tarfile.BLOCKSIZE))
    yield gz.flush()
