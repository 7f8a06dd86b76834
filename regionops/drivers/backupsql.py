"""SQL steps of backups and restores, through the one psycopg seam (:func:`postgres.connect`).

The *fingerprint point* makes restore verification exact while the application keeps
writing: on the primary, the fingerprinted tables are locked against writes (SHARE
mode, briefly, with a lock timeout so the application never queues behind us for
long), counted and checksummed, and a named restore point is written before the lock
is released.  Recovery that stops at that restore point therefore shows exactly the
counted rows.  The WAL between the backup's end and the restore point is read back
with ``pg_read_binary_file`` in bounded chunks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import psycopg
from psycopg import sql
from pydantic import BaseModel

from regionops.drivers.postgres import ConnInfo, connect
from regionops.errors import ExternalSystemError, TransientError
from regionops.lsn import Lsn

_WAL_NAME = re.compile(r"^[0-9A-F]{24}$")
READ_CHUNK = 4 << 20


class FingerprintPoint(BaseModel):
    """Table fingerprints and the restore point at which they hold exactly."""

    restore_point: str
    lsn: Lsn
    fingerprint: dict[str, dict[str, int | str]]


class RecoveryState(BaseModel):
    """A server in recovery: replay position and pause state."""

    in_recovery: bool
    replay_lsn: Lsn | None = None
    pause_state: str | None = None


def fingerprint_statement(table: str) -> sql.Composed:
    """Row count and an order-independent checksum of ``table`` (``schema.name`` or ``name``)."""
    ident = sql.Identifier(*table.split(".", 1))
    return sql.SQL(
        "SELECT count(*) AS rows, coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::bigint), 0)::text "
        "AS checksum FROM {} AS t"
    ).format(ident)


class BackupSql:
    """The SQL a backup or restore runs on one server."""

    def __init__(self, info: ConnInfo, connect_timeout: float = 3, statement_timeout_ms: int = 600_000):
        self.info = info
        self.connect_timeout = connect_timeout
        self.statement_timeout_ms = statement_timeout_ms

    def _connect(self):
        return connect(self.info, connect_timeout=self.connect_timeout,
                       statement_timeout_ms=self.statement_timeout_ms, application_name="regionops-backup")

    def fingerprints(self, tables: list[str]) -> dict[str, dict[str, int | str]]:
        """Row count and checksum of each table, read in one snapshot."""
        with self._connect() as conn:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                return {t: self._one(conn, t) for t in tables}

    @staticmethod
    def _one(conn: psycopg.Connection, table: str) -> dict[str, int | str]:
        row = conn.execute(fingerprint_statement(table)).fetchone()
        return {"rows": int(row["rows"]), "checksum": str(row["checksum"])}

    def fingerprint_point(self, tables: list[str], restore_point: str, lock_timeout_ms: int = 3000) -> FingerprintPoint:
        """Lock ``tables`` against writes, fingerprint them and create restore point ``restore_point``.

        Runs on the primary.  A lock that is not granted within ``lock_timeout_ms``
        raises TransientError (a long transaction holds the table; try again later).
        """
        try:
            with self._connect() as conn:
                with conn.transaction():
                    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout_ms)}ms")))
                    if tables:
                        conn.execute(
                            sql.SQL("LOCK TABLE {} IN SHARE MODE").format(
                                sql.SQL(", ").join(sql.Identifier(*t.split(".", 1)) for t in tables)
                            )
                        )
                    prints = {t: self._one(conn, t) for t in tables}
                    row = conn.execute("SELECT pg_create_restore_point(%s)::text AS lsn", (restore_point,)).fetchone()
        except ExternalSystemError as exc:
            if isinstance(exc.__cause__, psycopg.errors.LockNotAvailable):
                raise TransientError(
                    f"fingerprint tables {', '.join(tables)} could not be locked within {lock_timeout_ms} ms on "
                    f"{self.info.host}:{self.info.port} (a long transaction writes to them)"
                ) from exc
            raise
        return FingerprintPoint(restore_point=restore_point, lsn=Lsn.parse(row["lsn"]), fingerprint=prints)

    def flush_lsn(self) -> Lsn:
        """The primary's WAL flush position."""
        with self._connect() as conn:
            return Lsn.parse(conn.execute("SELECT pg_current_wal_flush_lsn()::text AS lsn").fetchone()["lsn"])

    def wal_segments(self, start: Lsn, end: Lsn) -> list[str]:
        """Names of the WAL files holding ``start``..``end`` on the primary's current timeline."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT pg_walfile_name(%s::pg_lsn) AS first, pg_walfile_name(%s::pg_lsn) AS last",
                (str(start), str(end)),
            ).fetchone()
        first, last = row["first"], row["last"]
        per_xlogid = 0x100000000 // self.wal_segment_size()
        tli = first[:8]
        return [
            f"{tli}{seg // per_xlogid:08X}{seg % per_xlogid:08X}"
            for seg in range(_segno(first, per_xlogid), _segno(last, per_xlogid) + 1)
        ]

    def wal_segment_size(self) -> int:
        """wal_segment_size in bytes."""
        with self._connect() as conn:
            return int(conn.execute(
                "SELECT setting::bigint AS n FROM pg_settings WHERE name = 'wal_segment_size'"
            ).fetchone()["n"])

    def wal_block_size(self) -> int:
        """wal_block_size (the WAL page) in bytes."""
        with self._connect() as conn:
            return int(conn.execute(
                "SELECT setting::bigint AS n FROM pg_settings WHERE name = 'wal_block_size'"
            ).fetchone()["n"])

    def read_wal_segment(self, name: str, size: int, upto: int | None = None) -> Iterator[bytes]:
        """The bytes of WAL file ``name`` in chunks (superuser or pg_read_server_files).

        With ``upto``, only the first ``upto`` bytes are read and the rest of the file is
        zeros: recovery stops before it reaches them, and zero pages read as end of WAL.
        """
        if not _WAL_NAME.match(name):
            raise ValueError(f"not a WAL file name: {name!r}")
        path = f"pg_wal/{name}"
        readable = size if upto is None else min(upto, size)
        with self._connect() as conn:
            for offset in range(0, readable, READ_CHUNK):
                length = min(READ_CHUNK, readable - offset)
                try:
                    row = conn.execute(
                        "SELECT pg_read_binary_file(%s, %s, %s) AS data", (path, offset, length)
                    ).fetchone()
                except psycopg.errors.UndefinedFile as exc:
                    raise ExternalSystemError(
                        f"WAL file {name} is no longer on {self.info.host}:{self.info.port}"
                    ) from exc
                data = bytes(row["data"])
                if len(data) != length:
                    raise ExternalSystemError(f"WAL file {name} on {self.info.host}:{self.info.port} is short")
                yield data
        for offset in range(readable, size, READ_CHUNK):
            yield bytes(min(READ_CHUNK, size - offset))

    def recovery_state(self) -> RecoveryState:
        """Whether the server is in recovery, where replay is, and whether it is paused."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT pg_is_in_recovery() AS r, pg_last_wal_replay_lsn()::text AS lsn, "
                "CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END AS pause"
            ).fetchone()
        return RecoveryState(in_recovery=row["r"], replay_lsn=Lsn.parse(row["lsn"]) if row["lsn"] else None,
                             pause_state=row["pause"])

    def end_recovery(self) -> None:
        """Resume replay of a server paused at its recovery target: it ends recovery and promotes."""
        with self._connect() as conn:
            conn.execute("SELECT pg_wal_replay_resume()")


def _segno(name: str, per_xlogid: int) -> int:
    return int(name[8:16], 16) * per_xlogid + int(name[16:24], 16)
