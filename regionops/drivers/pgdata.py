"""Tools that read or rebuild a data directory: pg_controldata, pg_waldump, pg_rewind, pg_basebackup.

They touch a node's disk, so they run on the node's own machine (through the
node-operation seam, :mod:`regionops.node`).  Each wraps one binary and parses what
the runbooks need from its output; failures carry the tool's last lines
(:func:`regionops.drivers.pgtools.run_tool`).
"""

from __future__ import annotations

import os
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from regionops.drivers.pgtools import as_user, run_tool, tool
from regionops.errors import TransientError
from regionops.lsn import Lsn

# WAL segment files: 8 hex digits of timeline, then 16 of segment number.
_SEGMENT = re.compile(r"^[0-9A-F]{24}$")
_RECORD = re.compile(r"len \(rec/tot\):\s*\d+/\s*(\d+), tx:\s*\d+, lsn: ([0-9A-F]+/[0-9A-F]+)")
_ERROR_AT = re.compile(r"error in WAL record at [0-9A-F]+/[0-9A-F]+: .* at ([0-9A-F]+/[0-9A-F]+)")
_COMMIT = re.compile(r"desc: COMMIT (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")
# How many of the newest segment files to try: after a crash the newest names can be
# recycled files holding old pages, which pg_waldump rejects before any record.
_MAX_SEGMENTS_TRIED = 6


def read_control_data(data_dir: Path, os_user: str | None) -> dict[str, str]:
    """pg_controldata's fields as ``{label: value}`` (e.g. ``"Database cluster state"``)."""
    out = run_tool([tool("pg_controldata"), "-D", str(data_dir)], os_user=os_user, timeout=30, env={"LC_ALL": "C"})
    fields: dict[str, str] = {}
    for line in out.splitlines():
        label, sep, value = line.partition(":")
        if sep:
            fields[label.strip()] = value.strip()
    return fields


def _segments_newest_first(data_dir: Path) -> list[str]:
    wal = data_dir / "pg_wal"
    names = [p.name for p in wal.iterdir() if _SEGMENT.match(p.name)]
    # Newest WAL: highest segment number, then highest timeline.
    return sorted(names, key=lambda n: (n[8:], n[:8]), reverse=True)


def _align8(value: int) -> int:
    return (value + 7) & ~7


def read_wal_end(data_dir: Path, os_user: str | None) -> tuple[Lsn, datetime | None, str] | None:
    """The end of the valid WAL in ``data_dir`` with the last commit time found there, and the segment.

    Reads the newest segment files with pg_waldump until one holds records.  None when
    no segment holds a readable record.  The commit time is None when the segment that
    ends the WAL has no commit record.
    """
    for segment in _segments_newest_first(data_dir)[:_MAX_SEGMENTS_TRIED]:
        parsed = parse_waldump(_waldump_output(data_dir / "pg_wal" / segment, os_user))
        if parsed is not None:
            return parsed[0], parsed[1], segment
    return None


def parse_waldump(output: str) -> tuple[Lsn, datetime | None] | None:
    """End of WAL and last commit time from one segment's pg_waldump output (None: no records).

    pg_waldump stops at the first invalid record and says where ("invalid record length
    at 0/400A2F0"): that is the end of WAL.  A segment read to its end has no such line;
    then the last record's start plus its length (8-byte aligned) is the end.
    """
    records = _RECORD.findall(output)
    if not records:
        return None
    end_at = _ERROR_AT.search(output)
    if end_at:
        end = Lsn.parse(end_at.group(1))
    else:
        total, start = records[-1]
        end = Lsn(_align8(Lsn.parse(start).value + int(total)))
    commits = _COMMIT.findall(output)
    last_commit = datetime.fromisoformat(commits[-1]).replace(tzinfo=UTC) if commits else None
    return end, last_commit


def _waldump_output(path: Path, os_user: str | None) -> str:
    """pg_waldump's whole output (stdout and stderr): it exits non-zero at the end of WAL by design."""
    argv = as_user([tool("pg_waldump"), str(path)], os_user)
    try:
        proc = subprocess.run(
            argv, capture_output=True, timeout=60, cwd="/", env={**os.environ, "TZ": "UTC", "LC_ALL": "C"}
        )
    except subprocess.TimeoutExpired as exc:
        raise TransientError(f"pg_waldump did not finish within 60s on {path.name}") from exc
    return (proc.stdout + proc.stderr).decode(errors="replace")


def pg_rewind(
    data_dir: Path, source_conninfo: str, os_user: str | None, timeout: float = 900, password: str | None = None
) -> str:
    """Rewind ``data_dir`` to the source server's history.  Returns pg_rewind's output.

    ``source_conninfo`` must not hold the password: it is on the command line, which
    every user of the machine can read (``ps``) and which is logged.  The password goes
    into the environment of this one process (``PGPASSWORD``), which only its user can read.
    """
    if "password=" in source_conninfo:
        raise ValueError("pg_rewind's --source-server must not carry the password; pass password=")
    return run_tool(
        [tool("pg_rewind"), "-D", str(data_dir), "--source-server", source_conninfo, "--progress"],
        os_user=os_user,
        timeout=timeout,
        env={"PGPASSWORD": password} if password else None,
    )


def pg_basebackup(
    dest: Path,
    *,
    host: str,
    port: int,
    user: str,
    os_user: str | None,
    password: str | None = None,
    timeout: float = 3600,
) -> str:
    """Copy a running server into the new directory ``dest`` (WAL streamed alongside, fast checkpoint).

    No ``-S``: the node's permanent slot may still be held by its old incarnation, so a
    temporary slot (pg_basebackup's default with ``-X stream``) protects the copy's WAL.
    """
    env = {"PGPASSWORD": password} if password else None
    return run_tool(
        [
            tool("pg_basebackup"),
            "-h",
            host,
            "-p",
            str(port),
            "-U",
            user,
            "-D",
            str(dest),
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-password",
        ],
        os_user=os_user,
        timeout=timeout,
        env=env,
    )
