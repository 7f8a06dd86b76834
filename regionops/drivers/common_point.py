"""Reading several nodes at one common point while the application keeps writing.

Fingerprinting the primary and then each replica compares different moments: an
application that writes throughout makes a healthy cluster look inconsistent.  Here
every node is read at one point instead:

1. Outside any lock, each replica is given a moment to catch up with the primary, and
   every connection is opened, so that the lock below is held for milliseconds.
2. On the primary: ``LOCK TABLE ... IN SHARE MODE`` (writers to those tables wait; a
   lock timeout keeps us from queueing behind a long writer), then, in one statement,
   the WAL insert position and an exported snapshot.  No commit touching the tables can
   happen from here until the lock goes.
3. Each replica waits (within ``max_hold_seconds``) until it has replayed that position,
   then opens its own REPEATABLE READ snapshot: it shows exactly the primary's rows.
4. A second primary session imports the exported snapshot; the lock is released.
5. Only now, with writers flowing again, every node is fingerprinted from its snapshot.

A replica that cannot reach the point in time (lagging, paused, on another timeline) is
retried ``attempts`` times, then reported as not read at the point, with the reason;
it is never compared at another moment.  :func:`locked_snapshot` is the same lock-and-
export step for the backup's proof point (:mod:`regionops.drivers.backupsql`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from regionops.drivers.postgres import ConnInfo, DictConnection, connect, one_row
from regionops.errors import ExternalSystemError, TransientError
from regionops.lsn import Lsn
from regionops.model import CommonPoint

log = logging.getLogger(__name__)

Fingerprints = dict[str, dict[str, int | str]]  # table -> {"rows": n, "checksum": "..."}


def fingerprint_statement(table: str) -> sql.Composed:
    """Row count and an order-independent checksum of ``table`` (``schema.name`` or ``name``)."""
    ident = sql.Identifier(*table.split(".", 1))
    return sql.SQL(
        "SELECT count(*) AS rows, coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::bigint), 0)::text "
        "AS checksum FROM {} AS t"
    ).format(ident)


def fingerprint_in(conn: DictConnection, tables: list[str]) -> Fingerprints:
    """Fingerprint ``tables`` on an open connection (inside its current snapshot, if it has one)."""
    out: Fingerprints = {}
    for table in tables:
        row = one_row(conn, fingerprint_statement(table))
        out[table] = {"rows": int(row["rows"]), "checksum": str(row["checksum"])}
    return out


@dataclass
class LockedSnapshot:
    """What :func:`locked_snapshot` fixed under the lock."""

    lsn: Lsn  # the primary's WAL insert position under the lock
    snapshot: str  # exported snapshot id, importable while the lock session's transaction is open
    locked_at: float  # monotonic time the LOCK statement was sent (writers wait from here)


def _lock_tables(tables: list[str]) -> sql.Composed:
    return sql.SQL("LOCK TABLE {} IN SHARE MODE").format(
        sql.SQL(", ").join(sql.Identifier(*t.split(".", 1)) for t in tables)
    )


@contextmanager
def locked_snapshot(
    conn: DictConnection, tables: list[str], lock_timeout_ms: int, where: str
) -> Iterator[LockedSnapshot]:
    """Inside the block, ``tables`` are locked against writes on ``conn`` (an autocommit primary session).

    The block fixes the point (imports the snapshot elsewhere, writes a restore point);
    leaving it commits, which releases the lock.  A lock not granted within
    ``lock_timeout_ms`` raises TransientError (a long transaction writes to the tables).
    """
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    try:
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout_ms)}ms")))
        locked_at = time.monotonic()
        try:
            if tables:
                conn.execute(_lock_tables(tables))
        except psycopg.errors.LockNotAvailable as exc:
            raise TransientError(
                f"tables {', '.join(tables)} could not be locked within {lock_timeout_ms} ms on "
                f"{where} (a long transaction writes to them)"
            ) from exc
        # LOCK takes no snapshot, so the transaction's snapshot is taken by this statement,
        # after the lock was granted: it holds every commit to the tables, and nothing else can commit.
        row = one_row(conn, "SELECT pg_current_wal_insert_lsn()::text AS lsn, pg_export_snapshot() AS snap")
        yield LockedSnapshot(lsn=Lsn.parse(row["lsn"]), snapshot=row["snap"], locked_at=locked_at)
        conn.execute("COMMIT")
    except BaseException:
        if not conn.closed:
            conn.execute("ROLLBACK")
        raise


def import_snapshot(conn: DictConnection, snapshot: str) -> None:
    """Open a REPEATABLE READ transaction on ``conn`` that sees exactly the exported ``snapshot``."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))


def _replayed(conn: DictConnection, lsn: Lsn) -> bool:
    row = one_row(conn, "SELECT coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, false) AS ok", (str(lsn),))
    return bool(row["ok"])


class CommonPointReader:
    """Fingerprints a primary and its replicas at one common point (see the module's text)."""

    def __init__(
        self,
        primary: str,
        primary_info: ConnInfo,
        replicas: dict[str, ConnInfo],
        *,
        lock_timeout_ms: int = 250,
        max_hold_seconds: float = 0.8,
        attempts: int = 3,
        catch_up_seconds: float = 10,
        statement_timeout_ms: int = 300_000,
        connect_timeout: float = 3,
    ):
        self.primary = primary
        self.primary_info = primary_info
        self.replicas = replicas
        self.lock_timeout_ms = lock_timeout_ms
        self.max_hold_seconds = max_hold_seconds
        self.attempts = attempts
        self.catch_up_seconds = catch_up_seconds
        self.statement_timeout_ms = statement_timeout_ms
        self.connect_timeout = connect_timeout

    def _connect(self, info: ConnInfo, stack: ExitStack) -> DictConnection:
        return stack.enter_context(
            connect(
                info,
                connect_timeout=self.connect_timeout,
                statement_timeout_ms=self.statement_timeout_ms,
                application_name="regionops-consistency",
            )
        )

    def read(self, tables: list[str]) -> tuple[CommonPoint, dict[str, Fingerprints]]:
        """The point and every node's fingerprints at it (replicas that missed it are in ``point.missed``)."""
        last_error: Exception | None = None
        for attempt in range(1, self.attempts + 1):
            self._catch_up()
            try:
                point, prints = self._attempt(tables, attempt)
            except TransientError as exc:  # the lock was not granted: try again
                last_error = exc
                log.info("common point attempt %d failed: %s", attempt, exc)
                continue
            if not point.missed or attempt == self.attempts:
                return point, prints
            log.info("common point attempt %d: %s", attempt, point.sentence())
        assert last_error is not None
        raise last_error

    def _catch_up(self) -> None:
        """Let every replica replay the primary's current position first, so the lock is held briefly."""
        with connect(self.primary_info, connect_timeout=self.connect_timeout) as conn:
            target = Lsn.parse(one_row(conn, "SELECT pg_current_wal_insert_lsn()::text AS l")["l"])
        deadline = time.monotonic() + self.catch_up_seconds
        for name, info in self.replicas.items():
            try:
                with connect(info, connect_timeout=self.connect_timeout) as conn:
                    while not _replayed(conn, target) and time.monotonic() < deadline:
                        time.sleep(0.02)
            except (TransientError, ExternalSystemError) as exc:
                log.info("%s did not catch up before the common point: %s", name, exc)

    def _attempt(self, tables: list[str], attempt: int) -> tuple[CommonPoint, dict[str, Fingerprints]]:
        with ExitStack() as stack:
            lock_conn = self._connect(self.primary_info, stack)
            reader = self._connect(self.primary_info, stack)
            replicas: dict[str, DictConnection] = {}
            missed: dict[str, str] = {}
            for name, info in self.replicas.items():
                try:
                    replicas[name] = self._connect(info, stack)
                except (TransientError, ExternalSystemError) as exc:
                    missed[name] = f"unreachable: {exc}"
            opened: dict[str, DictConnection] = {}
            with locked_snapshot(
                lock_conn,
                tables,
                self.lock_timeout_ms,
                f"{self.primary} ({self.primary_info.host}:{self.primary_info.port})",
            ) as point:
                deadline = point.locked_at + self.max_hold_seconds
                pending = dict(replicas)
                while pending:
                    for name, conn in list(pending.items()):
                        if _replayed(conn, point.lsn):
                            # Replay only moves forward: a snapshot taken now holds everything up to the point,
                            # and nothing after it touches the locked tables while the lock is held.
                            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                            conn.execute("SELECT 1")
                            opened[name] = pending.pop(name)
                    if not pending or time.monotonic() >= deadline:
                        break
                    time.sleep(0.005)
                import_snapshot(reader, point.snapshot)
            held_ms = (time.monotonic() - point.locked_at) * 1000
            for name in pending:
                missed[name] = (
                    f"had not replayed {point.lsn} within {self.max_hold_seconds:g} s (writers are never held longer)"
                )
            prints = self._fingerprint_all({self.primary: reader, **opened}, tables)
            result = CommonPoint(
                primary=self.primary,
                lsn=point.lsn,
                held_ms=round(held_ms, 1),
                nodes=sorted(opened),
                missed=missed,
                attempts=attempt,
            )
            return result, prints

    @staticmethod
    def _fingerprint_all(conns: dict[str, DictConnection], tables: list[str]) -> dict[str, Fingerprints]:
        """Fingerprint every node from its snapshot, all at once (each connection in its own thread)."""

        def one(conn: DictConnection) -> Fingerprints:
            try:
                return fingerprint_in(conn, tables)
            finally:
                conn.execute("COMMIT")

        with ThreadPoolExecutor(max_workers=len(conns)) as pool:
            futures: dict[str, Any] = {name: pool.submit(one, conn) for name, conn in conns.items()}
            try:
                return {name: fut.result() for name, fut in futures.items()}
            except psycopg.Error as exc:
                raise ExternalSystemError(f"fingerprinting at the common point failed: {exc}") from exc
