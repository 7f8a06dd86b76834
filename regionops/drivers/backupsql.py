"""SQL steps of backups and restores, through the one psycopg seam (:func:`postgres.connect`).

The *fingerprint point* makes restore verification exact while the application keeps
writing, without stalling it: on the primary, the fingerprinted tables are locked
against writes (SHARE mode, with a lock timeout so the application never queues behind
us for long) only for the instant it takes to export a snapshot and write a named
restore point; a second session imports that snapshot, the lock goes, and the tables
are counted and checksummed from the snapshot while writes flow again.  Recovery that
stops at that restore point therefore shows exactly the counted rows (pgBackRest's WAL
archive carries the restore point to the restore).  The lock-and-export step is
:func:`regionops.drivers.common_point.locked_snapshot`, shared with the consistency check.
"""

from __future__ import annotations

import time
from contextlib import ExitStack

from pydantic import BaseModel

from regionops.drivers.common_point import fingerprint_in, import_snapshot, locked_snapshot
from regionops.drivers.postgres import ConnInfo, connect
from regionops.lsn import Lsn


class FingerprintPoint(BaseModel):
    """Table fingerprints and the restore point at which they hold exactly."""

    restore_point: str
    lsn: Lsn
    fingerprint: dict[str, dict[str, int | str]]
    writes_held_ms: float = 0.0  # how long writers to the tables waited for the point (lock wait included)


class RecoveryState(BaseModel):
    """A server in recovery: replay position and pause state."""

    in_recovery: bool
    replay_lsn: Lsn | None = None
    pause_state: str | None = None


class BackupSql:
    """The SQL a backup or restore runs on one server."""

    def __init__(self, info: ConnInfo, connect_timeout: float = 3, statement_timeout_ms: int = 600_000):
        self.info = info
        self.connect_timeout = connect_timeout
        self.statement_timeout_ms = statement_timeout_ms

    def _connect(self):
        return connect(
            self.info,
            connect_timeout=self.connect_timeout,
            statement_timeout_ms=self.statement_timeout_ms,
            application_name="regionops-backup",
        )

    def fingerprints(self, tables: list[str]) -> dict[str, dict[str, int | str]]:
        """Row count and checksum of each table, read in one snapshot."""
        with self._connect() as conn:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                return fingerprint_in(conn, tables)

    def fingerprint_point(self, tables: list[str], restore_point: str, lock_timeout_ms: int = 3000) -> FingerprintPoint:
        """Fix a point (snapshot + restore point ``restore_point``) under a brief lock, then fingerprint it.

        Runs on the primary.  Writers to ``tables`` wait only while the snapshot is
        exported and the restore point written, never while the tables are counted.  A
        lock that is not granted within ``lock_timeout_ms`` raises TransientError (a long
        transaction holds the table; try again later).
        """
        where = f"{self.info.host}:{self.info.port}"
        with ExitStack() as stack:
            lock_conn = stack.enter_context(self._connect())
            reader = stack.enter_context(self._connect())  # opened before the lock: the lock is held for ms
            with locked_snapshot(lock_conn, tables, lock_timeout_ms, where) as point:
                row = lock_conn.execute("SELECT pg_create_restore_point(%s)::text AS lsn", (restore_point,)).fetchone()
                import_snapshot(reader, point.snapshot)
            held_ms = (time.monotonic() - point.locked_at) * 1000
            try:
                prints = fingerprint_in(reader, tables)
            finally:
                reader.execute("COMMIT")
        return FingerprintPoint(
            restore_point=restore_point, lsn=Lsn.parse(row["lsn"]), fingerprint=prints, writes_held_ms=round(held_ms, 1)
        )

    def recovery_state(self) -> RecoveryState:
        """Whether the server is in recovery, where replay is, and whether it is paused."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT pg_is_in_recovery() AS r, pg_last_wal_replay_lsn()::text AS lsn, "
                "CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END AS pause"
            ).fetchone()
        return RecoveryState(
            in_recovery=row["r"], replay_lsn=Lsn.parse(row["lsn"]) if row["lsn"] else None, pause_state=row["pause"]
        )

    def end_recovery(self) -> None:
        """Resume replay of a server paused at its recovery target: it ends recovery and promotes."""
        with self._connect() as conn:
            conn.execute("SELECT pg_wal_replay_resume()")
