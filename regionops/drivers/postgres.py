"""The one psycopg seam: connecting, observing and acting on PostgreSQL servers over SQL.

Every connection has a connect timeout and a statement timeout; every identifier goes
through :mod:`psycopg.sql`; psycopg's errors become project errors here and nowhere
else.  Binaries (pg_ctl, pg_basebackup, ...) live in :mod:`regionops.drivers.pgtools`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from regionops.errors import ExternalSystemError, TransientError
from regionops.lsn import Lsn

# Observed-state models live in the driver-free regionops.model; re-exported here for callers.
from regionops.model import NodeState, ReplicationConnection, Role, Slot, WalReceiver  # noqa: F401
from regionops.topology import Cluster, Node

log = logging.getLogger(__name__)

Row = dict[str, Any]
# Every connection of the seam returns rows as dicts (see connect()).
DictConnection = psycopg.Connection[Row]


class NodeUnreachable(TransientError):
    """The server did not accept a connection (down, fenced, network)."""


@dataclass(frozen=True)
class ConnInfo:
    """How to reach one server.  ``password`` is never logged (see ``__repr__``)."""

    host: str
    port: int
    dbname: str
    user: str
    password: str | None = None

    def __repr__(self) -> str:
        return f"ConnInfo({self.user}@{self.host}:{self.port}/{self.dbname})"

    def libpq(self, **extra: Any) -> str:
        """A libpq connection string (for primary_conninfo and pg tools)."""
        parts = {"host": self.host, "port": self.port, "dbname": self.dbname, "user": self.user}
        if self.password:
            parts["password"] = self.password
        parts.update(extra)
        return " ".join(f"{k}={_quote_libpq(str(v))}" for k, v in parts.items())


def _quote_libpq(value: str) -> str:
    if value and all(c.isalnum() or c in "._-/:" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def conninfo_for(cluster: Cluster, node: Node, dbname: str | None = None) -> ConnInfo:
    """Connection details of ``node``, resolving the cluster's password reference."""
    password = cluster.password.resolve() if cluster.password else None
    return ConnInfo(node.host, node.port, dbname or cluster.database, cluster.user, password)


def replication_conninfo(cluster: Cluster, primary: str, for_node: str, *, with_password: bool = True) -> str:
    """The libpq string a replica ``for_node`` uses to stream from ``primary`` (primary_conninfo).

    application_name is the replica's name, so pg_stat_replication on the primary shows
    which node is which.  ``with_password=False`` for a string that goes on a command
    line (pg_rewind): the password then travels in the process's environment.
    """
    spec = cluster.nodes[primary]
    info = conninfo_for(cluster, spec, dbname="postgres")
    password = info.password if with_password else None
    info = type(info)(info.host, info.port, info.dbname, cluster.replication_user, password)
    return info.libpq(application_name=for_node)


@contextmanager
def connect(
    info: ConnInfo,
    *,
    connect_timeout: float = 3,
    statement_timeout_ms: int = 15_000,
    autocommit: bool = True,
    application_name: str = "regionops",
) -> Iterator[DictConnection]:
    """Open a connection with timeouts; translate psycopg errors into project errors."""
    try:
        conn = psycopg.connect(
            host=info.host,
            port=info.port,
            dbname=info.dbname,
            user=info.user,
            password=info.password,
            connect_timeout=max(1, int(connect_timeout)),
            autocommit=autocommit,
            application_name=application_name,
            options=f"-c statement_timeout={int(statement_timeout_ms)}",
            row_factory=dict_row,
        )
    except psycopg.OperationalError as exc:
        raise NodeUnreachable(f"cannot connect to {info.host}:{info.port}: {_first_line(exc)}") from exc
    try:
        with conn:
            yield conn
    except psycopg.OperationalError as exc:
        raise TransientError(f"{info.host}:{info.port}: {_first_line(exc)}") from exc
    except psycopg.Error as exc:
        raise ExternalSystemError(f"{info.host}:{info.port}: {_first_line(exc)}") from exc


def one_row(conn: DictConnection, statement: str | sql.SQL | sql.Composed, params: Any = None) -> Row:
    """The row a statement that always returns one returned (ExternalSystemError when it returned none)."""
    row = conn.execute(statement, params).fetchone()
    if row is None:
        text = statement.as_string(conn) if isinstance(statement, sql.Composable) else str(statement)
        raise ExternalSystemError(f"no row from {' '.join(text.split())[:120]}")
    return row


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# --- observation ---------------------------------------------------------------------


class DatabaseObserver(Protocol):
    """Reads a node's state.  The real one speaks SQL; tests may inject another."""

    def observe(self, node_name: str, info: ConnInfo) -> NodeState: ...


_COMMON_SQL = """
SELECT pg_is_in_recovery() AS in_recovery,
       (SELECT system_identifier::text FROM pg_control_system()) AS system_identifier,
       current_setting('server_version_num')::int AS server_version,
       current_setting('default_transaction_read_only') = 'on' AS read_only,
       (SELECT timeline_id FROM pg_control_checkpoint()) AS checkpoint_timeline,
       (SELECT setting::bigint FROM pg_settings WHERE name = 'max_slot_wal_keep_size') AS max_slot_wal_keep_size_mb
"""
_PRIMARY_SQL = """
SELECT pg_current_wal_lsn()::text AS current_lsn,
       ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS timeline
"""
_REPLICA_SQL = """
SELECT pg_last_wal_receive_lsn()::text AS receive_lsn,
       pg_last_wal_replay_lsn()::text AS replay_lsn,
       pg_is_wal_replay_paused() AS replay_paused,
       CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
            ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END
         AS replay_lag_seconds
"""
_RECEIVER_SQL = """
SELECT status, sender_host, sender_port, received_tli, flushed_lsn::text AS flushed_lsn, slot_name,
       extract(epoch FROM now() - last_msg_receipt_time)::float8 AS last_msg_age_seconds
FROM pg_stat_wal_receiver
"""
_REPLICATION_SQL = """
SELECT application_name, state, client_addr::text AS client_addr, sent_lsn::text AS sent_lsn,
       flush_lsn::text AS flush_lsn, replay_lsn::text AS replay_lsn,
       extract(epoch FROM replay_lag)::float8 AS replay_lag_seconds, sync_state
FROM pg_stat_replication ORDER BY application_name
"""
_SLOTS_SQL = """
SELECT slot_name, active, restart_lsn::text AS restart_lsn, wal_status,
       pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END,
                       restart_lsn)::bigint AS retained_bytes
FROM pg_replication_slots WHERE slot_type = 'physical' ORDER BY slot_name
"""


class SqlObserver:
    """Observes nodes over SQL; never raises for an unreachable node, reports it instead."""

    def __init__(self, connect_timeout: float = 3):
        self.connect_timeout = connect_timeout

    def observe(self, node_name: str, info: ConnInfo) -> NodeState:
        """Read role, timeline, LSNs, lag, WAL receiver, replication and slots of one node."""
        now = datetime.now(UTC)
        try:
            with connect(info, connect_timeout=self.connect_timeout, statement_timeout_ms=5000) as conn:
                common = one_row(conn, _COMMON_SQL)
                state: dict[str, Any] = {
                    "node": node_name,
                    "reachable": True,
                    "system_identifier": common["system_identifier"],
                    "server_version": common["server_version"],
                    "read_only": common["read_only"],
                    "max_slot_wal_keep_size_mb": common["max_slot_wal_keep_size_mb"],
                    "observed_at": now,
                    "slots": conn.execute(_SLOTS_SQL).fetchall(),
                }
                if common["in_recovery"]:
                    state["role"] = "replica"
                    state.update(one_row(conn, _REPLICA_SQL))
                    receiver = conn.execute(_RECEIVER_SQL).fetchone()
                    if receiver:
                        state["wal_receiver"] = receiver
                    state["timeline"] = (receiver or {}).get("received_tli") or common["checkpoint_timeline"]
                else:
                    state["role"] = "primary"
                    state.update(one_row(conn, _PRIMARY_SQL))
                    state["replication"] = conn.execute(_REPLICATION_SQL).fetchall()
                return NodeState.model_validate(state)
        except (TransientError, ExternalSystemError) as exc:
            log.info("observing %s failed: %s", node_name, exc)
            return NodeState(node=node_name, reachable=False, error=str(exc), observed_at=now)


# --- actions over SQL ------------------------------------------------------------------


class SqlNode:
    """SQL-level actions on one server.  Each method is one step a runbook can take."""

    def __init__(self, info: ConnInfo, connect_timeout: float = 3):
        self.info = info
        self.connect_timeout = connect_timeout

    @contextmanager
    def _conn(self, dbname: str | None = None, statement_timeout_ms: int = 15_000):
        info = (
            self.info
            if dbname is None
            else ConnInfo(self.info.host, self.info.port, dbname, self.info.user, self.info.password)
        )
        with connect(info, connect_timeout=self.connect_timeout, statement_timeout_ms=statement_timeout_ms) as c:
            yield c

    def ping(self) -> bool:
        """True when the server accepts a connection and answers a query."""
        try:
            with self._conn() as c:
                c.execute("SELECT 1")
            return True
        except (TransientError, ExternalSystemError):
            return False

    def query(self, statement: str | sql.Composable, params: Any = None) -> list[dict[str, Any]]:
        """Run a statement and return its rows (empty for statements without a result)."""
        with self._conn() as c:
            cur = c.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def current_lsn(self) -> Lsn:
        """The primary's current WAL insert position."""
        return Lsn.parse(self.query("SELECT pg_current_wal_lsn()::text AS lsn")[0]["lsn"])

    def replay_lsn(self) -> Lsn | None:
        """The replica's last replayed position (None on a primary)."""
        value = self.query("SELECT pg_last_wal_replay_lsn()::text AS lsn")[0]["lsn"]
        return Lsn.parse(value) if value else None

    def ensure_database(self, name: str) -> bool:
        """Create database ``name`` unless it exists.  True when it was created."""
        with self._conn("postgres") as c:
            if c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                return False
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            return True

    def ensure_slot(self, slot: str) -> bool:
        """Create physical replication slot ``slot`` unless it exists.  True when created."""
        with self._conn() as c:
            if c.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone():
                return False
            c.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))
            return True

    def drop_slot(self, slot: str) -> bool:
        """Drop a slot if present and inactive.  True when dropped."""
        with self._conn() as c:
            row = c.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
            if not row or row["active"]:
                return False
            c.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            return True

    def set_config(self, name: str, value: str | None) -> None:
        """ALTER SYSTEM SET (or RESET when ``value`` is None) and reload the configuration."""
        with self._conn() as c:
            if value is None:
                c.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name)))
            else:
                c.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
            c.execute("SELECT pg_reload_conf()")

    def set_configs(self, settings: dict[str, str | None]) -> None:
        """Several ALTER SYSTEM SET/RESET (None resets) followed by one reload.

        One reload matters when the settings belong together: a replica given a new
        primary_conninfo but the old primary_slot_name would start streaming with the
        wrong slot in between two reloads.
        """
        with self._conn() as c:
            for name, value in settings.items():
                if value is None:
                    c.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name)))
                else:
                    c.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
            c.execute("SELECT pg_reload_conf()")

    def set_password(self, role: str, password: str) -> None:
        """ALTER ROLE ... PASSWORD (stored as scram-sha-256, PostgreSQL's default encryption)."""
        with self._conn() as c:
            c.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))

    def show(self, name: str) -> str:
        """A setting's value as a new session sees it (so after a reload, the reloaded value)."""
        return str(self.query("SELECT current_setting(%s) AS v", (name,))[0]["v"])

    def last_replay_timestamp(self) -> datetime | None:
        """Commit time of the last transaction replayed (kept after promotion; None if none was)."""
        return self.query("SELECT pg_last_xact_replay_timestamp() AS ts")[0]["ts"]

    def slot_names(self) -> list[str]:
        """Names of the node's physical replication slots."""
        rows = self.query("SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'physical' ORDER BY 1")
        return [r["slot_name"] for r in rows]

    def pause_replay(self) -> None:
        """Pause WAL replay on a replica (fault injection for lag)."""
        self.query("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        """Resume WAL replay on a replica."""
        self.query("SELECT pg_wal_replay_resume()")

    def promote(self, wait_seconds: int = 30) -> bool:
        """Promote a replica with pg_promote; True when it finished within ``wait_seconds``."""
        with self._conn(statement_timeout_ms=(wait_seconds + 5) * 1000) as c:
            return bool(c.execute("SELECT pg_promote(true, %s) AS ok", (wait_seconds,)).fetchone()["ok"])

    def terminate_client_sessions(self) -> int:
        """Terminate every client backend except ours and WAL senders.  Returns how many."""
        rows = self.query(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS n FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        return int(rows[0]["n"])

    def checkpoint(self) -> None:
        """Force a checkpoint (makes a later clean stop and pg_rewind quicker)."""
        self.query("CHECKPOINT")

    def switch_wal(self) -> Lsn:
        """Close the current WAL segment; returns the switch position."""
        return Lsn.parse(self.query("SELECT pg_switch_wal()::text AS lsn")[0]["lsn"])

    def list_user_tables(self) -> list[str]:
        """Every ordinary table outside the system schemas, as schema.name."""
        rows = self.query("SELECT schemaname || '.' || relname AS name FROM pg_stat_user_tables ORDER BY 1")
        return [r["name"] for r in rows]


# --- the factory: every caller gets its SQL seam here -------------------------------


def sql_node_at(info: ConnInfo, *, connect_timeout: float = 3) -> SqlNode:
    """The SQL seam to a server known by its connection details (lab bootstrap, scratch instances)."""
    return SqlNode(info, connect_timeout=connect_timeout)


def sql_node_for(cluster: Cluster, node: str, *, dbname: str | None = None, connect_timeout: float = 3) -> SqlNode:
    """The SQL seam to ``node`` of ``cluster``, its connection details taken from the topology."""
    return sql_node_at(conninfo_for(cluster, cluster.nodes[node], dbname), connect_timeout=connect_timeout)


def observer_for(*, connect_timeout: float = 3) -> DatabaseObserver:
    """The observer of PostgreSQL servers (reports an unreachable node instead of raising)."""
    return SqlObserver(connect_timeout=connect_timeout)
