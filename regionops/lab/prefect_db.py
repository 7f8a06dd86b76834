"""The lab Prefect server's own PostgreSQL: its runs, deployments, locks and events.

Prefect's default SQLite database takes one writer at a time.  With three executors, three
workers, the served deployments and a runbook all writing, the lab's server answered a
node step's task-run creation after 2-6 s and failed heartbeats with "database is locked";
Prefect's self-hosting guide runs the server on PostgreSQL for this reason, and so does
the lab.  One small instance (``<pg dir>/prefect-db``, port ``ports.prefect_db``), owned
by the same OS user as the cluster's nodes, with the lab's PostgreSQL password.  It is
not part of cluster ``core``: no runbook touches it, and it has no replica.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from regionops.drivers.pgconf import write_hba, write_node_settings
from regionops.drivers.pgtools import PgCtl, chown_to
from regionops.drivers.postgres import ConnInfo, connect
from regionops.errors import RunbookError
from regionops.lab import pglab
from regionops.lab.component import ComponentStatus, LabComponent, Observation, Progress, indented
from regionops.lab.config import LabConfig
from regionops.lab.processes import port_open, wait_port_free

HOST = pglab.HOST
SUPERUSER = pglab.SUPERUSER
DATABASE = "prefect"
NAME = "prefect-db"

# Only TCP from loopback, with the password (the instance has no unix socket).
HBA_LINES = [f"host all all {HOST}/32 scram-sha-256"]

# Prefect's API and its background services hold a few pools of connections each.  A lost
# last second of the lab's run history on a machine crash is acceptable; waiting for an
# fsync on every state change is not (synchronous_commit off loses no consistency).
SETTINGS = {"max_connections": "200", "synchronous_commit": "off", "shared_buffers": "'32MB'"}


def data_dir(cfg: LabConfig) -> Path:
    """Where the instance keeps its data (beside the cluster's nodes, reachable by their OS user)."""
    return cfg.pg_dir / NAME


def prefect_db_port(cfg: LabConfig) -> int:
    """The instance's port (labs made before it existed get the one after the alert receiver's)."""
    return cfg.ports.prefect_db or cfg.ports.prefect + 2


def conninfo(cfg: LabConfig, dbname: str = DATABASE) -> ConnInfo:
    """How the lab reaches the instance (as its superuser, with the lab's password)."""
    return ConnInfo(HOST, prefect_db_port(cfg), dbname, SUPERUSER, pglab.lab_password(cfg))


def database_url(cfg: LabConfig) -> str:
    """``PREFECT_API_DATABASE_CONNECTION_URL`` of the lab's Prefect server."""
    password = quote(pglab.lab_password(cfg), safe="")
    return f"postgresql+asyncpg://{SUPERUSER}:{password}@{HOST}:{prefect_db_port(cfg)}/{DATABASE}"


class LabPrefectDatabase(LabComponent):
    """The Prefect server's PostgreSQL instance: created once, started before the server, stopped after it."""

    def ctl(self) -> PgCtl:
        """pg_ctl for the instance, logging beside its data directory."""
        return PgCtl(data_dir(self.cfg), self.cfg.os_user, self.cfg.pg_dir / f"{NAME}.log")

    def start(self, progress: Progress) -> None:
        """Create the instance and its database the first time; start it unless it runs."""
        progress = indented(progress)
        data = data_dir(self.cfg)
        if not (data / "PG_VERSION").exists():
            self._init(data)
            progress(f"created the Prefect database's PostgreSQL instance in {data}")
        write_node_settings(
            data, node=NAME, host=HOST, port=prefect_db_port(self.cfg), os_user=self.cfg.os_user, extra=SETTINGS
        )
        ctl = self.ctl()
        if not ctl.is_running():
            ctl.start()
        self._ensure_database(progress)

    def _init(self, data: Path) -> None:
        cfg = self.cfg
        cfg.pg_dir.mkdir(parents=True, exist_ok=True)
        chown_to(cfg.pg_dir, cfg.os_user)
        pglab.initdb(cfg, data)
        write_hba(data, HBA_LINES, cfg.os_user)

    def _ensure_database(self, progress: Progress) -> None:
        with connect(conninfo(self.cfg, "postgres")) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
                conn.execute(f"CREATE DATABASE {DATABASE}")
                progress(f"created database {DATABASE}")

    def stop(self, progress: Progress) -> None:
        """Stop the instance (after the Prefect server: its last writes land first)."""
        ctl = self.ctl()
        if (data_dir(self.cfg) / "PG_VERSION").exists() and ctl.is_running():
            ctl.stop("fast")
            wait_port_free(prefect_db_port(self.cfg), 10)
            progress(f"stopped {NAME}")

    def status(self, seen: Observation) -> list[ComponentStatus]:
        """Whether the instance answers, and how large the Prefect database is."""
        port = prefect_db_port(self.cfg)
        running = port_open(port)
        detail = "not running"
        healthy = False
        if running:
            try:
                with connect(conninfo(self.cfg), connect_timeout=2) as conn:
                    row = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database())) AS size").fetchone()
                detail, healthy = f"database {DATABASE}, {row['size'] if row else '?'}", True
            except RunbookError as exc:
                detail = f"not answering: {exc}"
        return [
            ComponentStatus(
                name="prefect database", endpoint=f"{HOST}:{port}", running=running, healthy=healthy, detail=detail
            )
        ]
