"""SQL steps of backups and restores, through the one psycopg seam (:func:`postgres.connect`).

The *fingerprint point* makes restore verification exact while the application keeps
writing: on the primary, the fingerprinted tables are locked against writes (SHARE
mode, briefly, with a lock timeout so the application never queues behind us for
long), counted and checksummed, and a named restore point is written before the lock
is released.  Recovery that stops at that restore point therefore shows exactly the
counted rows (pgBackRest's WAL archive carries the restore point to the restore).
"""

from __future__ import annotations

import psycopg
from psycopg import sql
from pydantic import BaseModel

from regionops.drivers.postgres import ConnInfo, connect
from regionops.errors import ExternalSystemError, TransientError
from regionops.lsn import Lsn


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
