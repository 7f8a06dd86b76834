"""pg_basebackup as a byte stream, and tar extraction fed from one.

``BaseBackupStream`` runs ``pg_basebackup -Ft -D - -X fetch`` and exposes its stdout as
a readable stream, so the archive can go straight into an S3 multipart upload without
touching local disk.  Its stderr is parsed as it comes: progress (``-P``) and the WAL
start and end points (``-v``).  ``TarExtract`` runs ``tar -x`` as the data directory's
OS user and is fed chunk by chunk.  Both kill their process on the way out if it is
still running, and turn failures into project errors carrying the tool's last lines.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from regionops.drivers.pgtools import as_user, tool
from regionops.drivers.postgres import ConnInfo
from regionops.errors import ConfigurationError, ExternalSystemError
from regionops.lsn import Lsn

log = logging.getLogger(__name__)

Compression = Literal["none", "gzip", "lz4", "zstd"]

_START = re.compile(r"write-ahead log start point: (\S+) on timeline (\d+)")
_END = re.compile(r"write-ahead log end point: (\S+)")
_PROGRESS = re.compile(r"(\d+)/(\d+) kB")


class BaseBackupReport(BaseModel):
    """What pg_basebackup said about the backup it streamed."""

    start_lsn: Lsn
    end_lsn: Lsn
    timeline: int
    streamed_kb: int
    estimated_kb: int | None = None


def compress_argument(compression: Compression, level: int | None, on: Literal["client", "server"]) -> list[str]:
    """pg_basebackup's ``--compress`` for a method, level and side (PostgreSQL 15 syntax)."""
    if compression == "none":
        return ["--compress=none"]
    detail = f":level={level}" if level is not None else ""
    return [f"--compress={on}-{compression}{detail}"]


class BaseBackupStream:
    """``pg_basebackup -Ft -D -`` of one server, read through :meth:`read`.

    Use as a context manager; call :meth:`finish` after reading to the end to get the
    report (it raises if pg_basebackup failed).  Leaving the block early kills it.
    The password, if any, goes through the environment, never the command line.
    """

    def __init__(
        self,
        info: ConnInfo,
        *,
        compression: Compression = "lz4",
        level: int | None = None,
        compress_on: Literal["client", "server"] = "client",
        label: str = "regionops",
        fast_checkpoint: bool = True,
        max_rate_kbps: int | None = None,
        os_user: str | None = None,
        on_progress: Callable[[int, int | None], None] | None = None,
    ):
        argv = [
            tool("pg_basebackup"), "-h", info.host, "-p", str(info.port), "-U", info.user,
            "-D", "-", "-F", "t", "-X", "fetch", "-v", "-P", "-l", label,
            # The output is a pipe: durability comes from the object store, not fsync.
            "--no-sync",
            "-c", "fast" if fast_checkpoint else "spread",
            *compress_argument(compression, level, compress_on),
        ]
        if compress_on == "server" and compression != "none":
            # pg_basebackup cannot inject backup_manifest into a server-compressed stream.
            argv.append("--no-manifest")
        if max_rate_kbps:
            argv += ["-r", f"{max_rate_kbps}k"]
        self.argv = argv
        self.os_user = os_user
        self._env = {**os.environ, **({"PGPASSWORD": info.password} if info.password else {})}
        self._on_progress = on_progress
        self._stderr_lines: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr_thread: threading.Thread | None = None
        self.start_lsn: Lsn | None = None
        self.end_lsn: Lsn | None = None
        self.timeline: int | None = None
        self.done_kb = 0
        self.total_kb: int | None = None

    def __enter__(self) -> BaseBackupStream:
        log.debug("running %s", " ".join(self.argv))
        self._proc = subprocess.Popen(
            as_user(self.argv, self.os_user),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=self._env,
            cwd="/",
            bufsize=0,
            start_new_session=True,  # so killing it also kills runuser's child
        )
        self._stderr_thread = threading.Thread(target=self._read_stderr, name="pg_basebackup-stderr", daemon=True)
        self._stderr_thread.start()
        return self

    def _read_stderr(self) -> None:
        assert self._proc and self._proc.stderr
        buffer = b""
        while True:
            chunk = self._proc.stderr.read(4096)
            if not chunk:
                break
            buffer += chunk
            # Progress lines end in \r on a terminal and \n otherwise; accept both.
            *lines, buffer = re.split(rb"[\r\n]", buffer)
            for raw in lines:
                self._line(raw.decode(errors="replace").strip())
        self._line(buffer.decode(errors="replace").strip())

    def _line(self, line: str) -> None:
        if not line:
            return
        if (m := _PROGRESS.search(line)) and "kB" in line:
            self.done_kb, self.total_kb = int(m.group(1)), int(m.group(2))
            if self._on_progress:
                self._on_progress(self.done_kb, self.total_kb)
            return
        self._stderr_lines.append(line)
        if m := _START.search(line):
            self.start_lsn, self.timeline = Lsn.parse(m.group(1)), int(m.group(2))
        elif m := _END.search(line):
            self.end_lsn = Lsn.parse(m.group(1))

    def read(self, size: int = -1, /) -> bytes:
        """Bytes of the archive; b'' at its end."""
        assert self._proc and self._proc.stdout, "use BaseBackupStream as a context manager"
        return self._proc.stdout.read(size)

    def _tail(self) -> str:
        return " | ".join(self._stderr_lines[-3:]) or "no output"

    def finish(self, timeout: float = 120) -> BaseBackupReport:
        """Wait for pg_basebackup to exit after the stream ended; its report, or an error."""
        assert self._proc is not None
        try:
            code = self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise ExternalSystemError(f"pg_basebackup did not exit within {timeout:g}s after its output ended") from exc
        if self._stderr_thread:
            self._stderr_thread.join(timeout=10)
        if code != 0:
            raise ExternalSystemError(f"pg_basebackup exited {code}: {self._tail()}")
        if self.start_lsn is None or self.end_lsn is None or self.timeline is None:
            raise ExternalSystemError(f"pg_basebackup did not report its WAL start and end points: {self._tail()}")
        return BaseBackupReport(start_lsn=self.start_lsn, end_lsn=self.end_lsn, timeline=self.timeline,
                                streamed_kb=self.done_kb, estimated_kb=self.total_kb)

    def failure(self) -> str | None:
        """pg_basebackup's own complaint when it has already exited non-zero (else None)."""
        if self._proc is None or self._proc.poll() in (None, 0):
            return None
        if self._stderr_thread:
            self._stderr_thread.join(timeout=5)
        return f"pg_basebackup exited {self._proc.returncode}: {self._tail()}"

    def __exit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _kill_group(proc)
        for pipe in (proc.stdout, proc.stderr):
            if pipe:
                pipe.close()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        log.warning("process %s did not exit after SIGKILL", proc.pid)


# Decompressors tar runs: gzip is built into tar, the others are separate programs.
_TAR_FILTERS: dict[str, list[str]] = {
    "none": [],
    "gzip": ["-z"],
    "lz4": ["--use-compress-program=lz4"],
    "zstd": ["--use-compress-program=zstd"],
}


class ExtractFailed(ExternalSystemError):
    """tar could not extract what it was fed (corrupt, truncated or wrongly compressed data)."""


class TarExtract:
    """``tar -x`` into ``target`` as ``os_user``, fed through :meth:`write`."""

    def __init__(self, target: Path, compression: Compression, os_user: str | None):
        program = {"lz4": "lz4", "zstd": "zstd"}.get(compression)
        if program and not shutil.which(program):
            raise ConfigurationError(
                f"unpacking a {compression} backup needs the {program} program (apt-get install {program})"
            )
        self.argv = ["tar", "-x", "-f", "-", "-C", str(target), "--no-same-owner", *_TAR_FILTERS[compression]]
        self.os_user = os_user
        self._proc: subprocess.Popen[bytes] | None = None
        self._err = b""
        self._err_thread: threading.Thread | None = None

    def __enter__(self) -> TarExtract:
        self._proc = subprocess.Popen(
            as_user(self.argv, self.os_user), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, cwd="/", start_new_session=True,
        )
        self._err_thread = threading.Thread(target=self._drain, name="tar-stderr", daemon=True)
        self._err_thread.start()
        return self

    def _drain(self) -> None:
        assert self._proc and self._proc.stderr
        self._err = self._proc.stderr.read()

    def _message(self) -> str:
        if self._err_thread:
            self._err_thread.join(timeout=5)
        lines = self._err.decode(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:]) or "no output"

    def write(self, data: bytes) -> None:
        """Feed bytes; ExtractFailed when tar has given up."""
        assert self._proc and self._proc.stdin
        try:
            self._proc.stdin.write(data)
        except (BrokenPipeError, ValueError) as exc:
            self._proc.wait(timeout=10)
            raise ExtractFailed(f"tar stopped extracting (exit {self._proc.returncode}): {self._message()}") from exc

    def finish(self, timeout: float = 300) -> None:
        """Close tar's input and wait; ExtractFailed when it exits non-zero."""
        assert self._proc and self._proc.stdin
        try:
            self._proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            code = self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise ExtractFailed(f"tar did not finish within {timeout:g}s") from exc
        if code != 0:
            raise ExtractFailed(f"tar exited {code}: {self._message()}")

    def __exit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            _kill_group(proc)
        if proc is not None and proc.stdin and not proc.stdin.closed:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
