"""The lab's PostgreSQL cluster ``core``: created with a primary in eu and streaming replicas in us and apac.

After switchovers and failovers another node may be primary; starting the cluster again
keeps whatever layout it has (see :func:`ensure_cluster`)."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Collection
from pathlib import Path

from regionops.drivers.pgconf import (
    configure_standby,
    slot_name,
    write_archive_settings,
    write_hba,
    write_node_settings,
)
from regionops.drivers.pgtools import PgCtl, chown_to, kill_instance, reachable_by, run_tool, tool
from regionops.drivers.postgres import ConnInfo, SqlNode, observer_for, sql_node_at
from regionops.errors import ConfigurationError, DeadlineExceeded
from regionops.lab.config import LAB_DATABASE, LAB_NODES, LAB_PRIMARY, LabConfig
from regionops.lab.processes import command_lines
from regionops.waiting import poll_until

HOST = "127.0.0.1"
SUPERUSER = "postgres"

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS app_events (
    id         bigserial PRIMARY KEY,
    region     text NOT NULL,
    payload    text,
    created_at timestamptz NOT NULL DEFAULT now()
)
"""

# Realistic application data, so restore verification and the DR drill's consistency
# check compare real rows.  Deterministic (no random()): every lab seeds the same data.
SEED_TABLES = ("public.customers", "public.products", "public.orders")
SEED_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS customers (
    id         bigint PRIMARY KEY,
    name       text NOT NULL,
    email      text NOT NULL UNIQUE,
    region     text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS products (
    id          bigint PRIMARY KEY,
    sku         text NOT NULL UNIQUE,
    title       text NOT NULL,
    price_cents integer NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    id          bigint PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id),
    product_id  bigint NOT NULL REFERENCES products (id),
    quantity    integer NOT NULL,
    status      text NOT NULL,
    ordered_at  timestamptz NOT NULL
)
"""
SEED_DATA_SQL = (
    """
INSERT INTO customers
SELECT g, 'Customer ' || g, 'customer' || g || '@example.com',
       (ARRAY['eu', 'us', 'apac'])[1 + g %% 3],
       timestamptz '2024-01-01 00:00+00' + g * interval '17 minutes'
FROM generate_series(1, %(customers)s) g
ON CONFLICT DO NOTHING""",
    """
INSERT INTO products
SELECT g, 'SKU-' || lpad(g::text, 6, '0'), 'Product ' || g, 199 + (g * 7919) %% 20000
FROM generate_series(1, %(products)s) g
ON CONFLICT DO NOTHING""",
    """
INSERT INTO orders
SELECT g, 1 + (g * 7) %% %(customers)s, 1 + (g * 13) %% %(products)s, 1 + g %% 5,
       (ARRAY['placed', 'paid', 'shipped', 'delivered', 'returned'])[1 + g %% 5],
       timestamptz '2024-02-01 00:00+00' + g * interval '3 minutes'
FROM generate_series(1, %(orders)s) g
ON CONFLICT DO NOTHING""",
)

# Every TCP connection needs the password (scram-sha-256), replication included.  The unix
# socket (pgBackRest's way in) lives in a 0700 directory only the server's OS user enters.
HBA_LINES = [
    "local all all trust",
    f"host all all {HOST}/32 scram-sha-256",
    f"host replication all {HOST}/32 scram-sha-256",
]


def hba_lines(cfg: LabConfig) -> list[str]:
    """Who may connect: loopback, and with a WAN the lab's whole /16 (clients arrive from the host's side)."""
    plan = cfg.wan_plan()
    if plan is None:
        return HBA_LINES
    return [*HBA_LINES, *(f"host {db} all {plan.subnet} scram-sha-256" for db in ("all", "replication"))]


def conninfo(cfg: LabConfig, node: str, dbname: str = LAB_DATABASE) -> ConnInfo:
    """How to reach a lab node (with the lab's password)."""
    return ConnInfo(cfg.node_host(node), cfg.ports.postgres[node], dbname, SUPERUSER, cfg.pg_password())


def socket_dir(cfg: LabConfig) -> Path:
    """The nodes' unix socket directory (pgBackRest reaches PostgreSQL only through a socket)."""
    return cfg.pg_dir / "run"


def pgbackrest_dir(cfg: LabConfig) -> Path:
    """pgBackRest's configuration, spool, lock and log directories live under this one."""
    return cfg.pg_dir / "pgbackrest"


def pgctl(cfg: LabConfig, node: str) -> PgCtl:
    """pg_ctl for a lab node, logging beside its data directory (which its OS user can write)."""
    return PgCtl(cfg.data_dir(node), cfg.os_user, cfg.pg_dir / f"{node}.log", netns=cfg.netns(LAB_NODES[node]))


def _check_reachable_by_os_user(cfg: LabConfig, path: Path) -> None:
    """PostgreSQL runs as another user when we are root: every parent must be traversable."""
    if not reachable_by(cfg.os_user, path):
        raise ConfigurationError(
            f"the lab directory {cfg.lab_dir} is not reachable by OS user {cfg.os_user!r}, who runs "
            "PostgreSQL (a parent directory is private); set REGIONOPS_LAB_DIR to a directory it can "
            "reach, e.g. under /tmp or /srv"
        )


def _prepare_pg_root(cfg: LabConfig) -> Path:
    root = cfg.pg_dir
    root.mkdir(parents=True, exist_ok=True)
    if cfg.pg_root is None:
        os.chmod(cfg.lab_dir, 0o755)
    chown_to(root, cfg.os_user)
    _check_reachable_by_os_user(cfg, root)
    return root


def _init_primary(cfg: LabConfig) -> None:
    data = cfg.data_dir(LAB_PRIMARY)
    initdb(cfg, data)
    host, port = cfg.node_host(LAB_PRIMARY), cfg.ports.postgres[LAB_PRIMARY]
    write_node_settings(data, node=LAB_PRIMARY, host=host, port=port, os_user=cfg.os_user)
    write_hba(data, hba_lines(cfg), cfg.os_user)


def lab_password(cfg: LabConfig) -> str:
    """The lab's PostgreSQL password (ConfigurationError naming its file when it is missing)."""
    password = cfg.pg_password()
    if password is None:
        raise ConfigurationError(f"the lab's PostgreSQL password file {cfg.pg_password_file} is missing")
    return password


def initdb(cfg: LabConfig, data: Path) -> None:
    """Create an instance in ``data`` as the lab's OS user, its superuser with the lab's password."""
    password = lab_password(cfg)
    # initdb reads the password as the server's OS user: a private copy it can read, removed at once.
    pwfile = cfg.pg_dir / f".initdb-password-{data.name}"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    chown_to(pwfile, cfg.os_user)
    try:
        run_tool(
            [
                tool("initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
            os_user=cfg.os_user,
            timeout=120,
        )
    finally:
        pwfile.unlink(missing_ok=True)


def _clone_replica(cfg: LabConfig, node: str, source: str) -> None:
    data = cfg.data_dir(node)
    run_tool(
        [
            tool("pg_basebackup"),
            "-h",
            cfg.node_host(source),
            "-p",
            str(cfg.ports.postgres[source]),
            "-U",
            SUPERUSER,
            "-D",
            str(data),
            "-X",
            "stream",
            "-c",
            "fast",
            "-S",
            slot_name(node),
            "--no-password",
        ],
        os_user=cfg.os_user,
        timeout=300,
        env={"PGPASSWORD": cfg.pg_password() or ""},  # never on the command line
        netns=cfg.netns(LAB_NODES[node]),  # from the replica's host, across the WAN
    )
    write_node_settings(data, node=node, host=cfg.node_host(node), port=cfg.ports.postgres[node], os_user=cfg.os_user)
    primary = conninfo(cfg, source, dbname="postgres")
    configure_standby(
        data,
        primary_conninfo=primary.libpq(application_name=node),
        slot=slot_name(node),
        os_user=cfg.os_user,
    )


def _has_data(cfg: LabConfig, node: str) -> bool:
    return (cfg.data_dir(node) / "PG_VERSION").exists()


def writable_nodes(cfg: LabConfig, nodes: Collection[str] = tuple(LAB_NODES)) -> list[str]:
    """The running nodes among ``nodes`` that are not in recovery (normally exactly one)."""
    observer = observer_for(connect_timeout=2)
    return [
        n
        for n in nodes
        if pgctl(cfg, n).is_running() and observer.observe(n, conninfo(cfg, n, dbname="postgres")).role == "primary"
    ]


ArchiveSettings = Callable[[str], dict[str, str]]


def ensure_cluster(
    cfg: LabConfig,
    progress: Callable[[str], None],
    keep_stopped: Collection[str] = (),
    archive: ArchiveSettings | None = None,
) -> str | None:
    """Create (first time) and start the three nodes; returns the primary, or None when not exactly one.

    Idempotent: existing nodes are only started, whichever of them is primary now (a
    switchover or failover may have moved it away from eu-1).  Nodes in ``keep_stopped``
    (fenced ones) are not started.  On the one primary, the replication slots, database
    and schema are ensured; a node without a data directory is cloned from it.
    ``archive(node)`` gives each node's WAL-archiving settings, written before it starts
    (a running node whose settings change is restarted: archive_mode needs it).
    """
    _prepare_pg_root(cfg)
    if not any(_has_data(cfg, n) for n in LAB_NODES):
        progress(f"initialising {LAB_PRIMARY} (primary, {LAB_NODES[LAB_PRIMARY]}) in {cfg.data_dir(LAB_PRIMARY)}")
        _init_primary(cfg)
    for node in LAB_NODES:
        if _has_data(cfg, node) and node not in keep_stopped:
            _write_archive(cfg, node, archive, progress)
            _ensure_running(cfg, node, progress)

    writable = writable_nodes(cfg)
    primary = writable[0] if len(writable) == 1 else None
    if primary is None:
        progress(f"not exactly one primary ({', '.join(writable) or 'none'}): slots and schema left as they are")
    else:
        _require_passwords(cfg, primary, progress)
        sql = sql_node_at(conninfo(cfg, primary, dbname="postgres"))
        # A slot per replica keeps WAL on the primary for a replica that is briefly away.
        for node in LAB_NODES:
            if node != primary:
                sql.ensure_slot(slot_name(node))
        if sql.ensure_database(LAB_DATABASE):
            progress(f"created database {LAB_DATABASE}")
        app = sql_node_at(conninfo(cfg, primary))
        app.query(SCHEMA_SQL)
        seeded = seed_application_data(app, cfg.seed_rows)
        if seeded:
            progress(seeded)

    for node in LAB_NODES:
        if _has_data(cfg, node) or node in keep_stopped:
            continue
        if primary is None:
            progress(f"{node} has no data directory and there is no single primary to clone it from")
            continue
        progress(f"cloning {node} ({LAB_NODES[node]}) from {primary} with pg_basebackup")
        shutil.rmtree(cfg.data_dir(node), ignore_errors=True)
        _clone_replica(cfg, node, primary)
        _write_archive(cfg, node, archive, progress)
        _ensure_running(cfg, node, progress)
    return primary


def _require_passwords(cfg: LabConfig, primary: str, progress: Callable[[str], None]) -> None:
    """A lab made before its nodes required passwords: set the password, then stop trusting TCP connections.

    In that order, over the connections trust still allows: the role's password first (on
    the primary; it replicates), then each replica's primary_conninfo with it, then
    pg_hba.conf on every node, reloaded.
    """
    hba = cfg.data_dir(primary) / "pg_hba.conf"
    if "scram-sha-256" in hba.read_text() or not all(pgctl(cfg, n).is_running() for n in LAB_NODES):
        return
    password = cfg.pg_password()
    if password is None:
        return
    sql_node_at(conninfo(cfg, primary, "postgres")).set_password(SUPERUSER, password)
    for node in LAB_NODES:
        if node != primary:
            replica = conninfo(cfg, primary, "postgres")
            sql_node_at(conninfo(cfg, node, "postgres")).set_config(
                "primary_conninfo", replica.libpq(application_name=node)
            )
    for node in LAB_NODES:
        write_hba(cfg.data_dir(node), hba_lines(cfg), cfg.os_user)
        sql_node_at(conninfo(cfg, node, "postgres")).query("SELECT pg_reload_conf()")
    progress("the nodes now require a password (scram-sha-256) for every TCP connection")


def seed_application_data(app: SqlNode, customers: int) -> str | None:
    """Create the application tables and fill them once (``customers`` rows, 5x orders).  None if present."""
    app.query(SEED_SCHEMA_SQL)
    # Orders go in last: a seeding interrupted half-way is completed by the next `lab up`.
    if app.query("SELECT EXISTS (SELECT 1 FROM orders) AS seeded")[0]["seeded"] or customers <= 0:
        return None
    counts = {"customers": customers, "products": max(10, customers // 10), "orders": customers * 5}
    for statement in SEED_DATA_SQL:
        app.query(statement, counts)
    return (
        f"seeded the application data: {counts['customers']} customers, {counts['products']} products, "
        f"{counts['orders']} orders"
    )


def _write_archive(cfg: LabConfig, node: str, archive: ArchiveSettings | None, progress: Callable[[str], None]) -> None:
    if archive is None:
        return
    sockets = socket_dir(cfg)
    sockets.mkdir(parents=True, exist_ok=True)
    os.chmod(sockets, 0o700)  # the local rule trusts whoever reaches the socket: only the server's OS user may
    chown_to(sockets, cfg.os_user)
    changed = write_archive_settings(cfg.data_dir(node), archive(node), cfg.os_user)
    ctl = pgctl(cfg, node)
    if changed and ctl.is_running() and not ctl.is_frozen():
        # A lab made before WAL archiving: archive_mode and the socket directory need a restart.
        ctl.stop("fast", timeout=30)
        progress(f"restarting {node} to turn WAL archiving on")


def _ensure_running(cfg: LabConfig, node: str, progress: Callable[[str], None]) -> None:
    ctl = pgctl(cfg, node)
    if ctl.is_running():
        progress(f"{node} already running on port {cfg.ports.postgres[node]}")
        return
    ctl.start()
    progress(f"started {node} on port {cfg.ports.postgres[node]}")


def archiver_pids(cfg: LabConfig) -> list[int]:
    """pgBackRest processes of this lab (asynchronous archive-push outlives the server that started it)."""
    marker = str(pgbackrest_dir(cfg)).encode()
    return [
        pid
        for pid, cmdline in command_lines()
        if (cmdline.startswith(b"pgbackrest") or b"/pgbackrest\0" in cmdline) and marker in cmdline
    ]


def stop_archivers(cfg: LabConfig, timeout: float = 15) -> list[int]:
    """Let this lab's pgBackRest processes finish (then SIGTERM them): nothing of the lab runs after down."""
    pids = archiver_pids(cfg)
    if not pids:
        return []
    try:
        poll_until(lambda: not archiver_pids(cfg), timeout=timeout, interval=0.2, what="pgBackRest to finish")
    except DeadlineExceeded:
        for pid in archiver_pids(cfg):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    return pids


def stop_cluster(cfg: LabConfig, progress: Callable[[str], None]) -> None:
    """Stop every node that runs (fast, then immediate if fast does not finish), then this lab's pgBackRest."""
    for node in LAB_NODES:
        if not cfg.data_dir(node).exists():
            continue
        ctl = pgctl(cfg, node)
        if ctl.is_frozen():
            # A frozen (SIGSTOPped) server honours no stop request; resumed, a fenced old
            # primary would take writes again.  Killing it is the immediate stop it cannot do.
            kill_instance(ctl)
            progress(f"killed frozen {node}")
            continue
        if not ctl.is_running():
            continue
        try:
            ctl.stop("fast", timeout=20)
        except Exception:  # noqa: BLE001 - fall back to an immediate stop, the lab is going away
            ctl.stop("immediate", timeout=20)
        progress(f"stopped {node}")
    if stop_archivers(cfg):
        progress("pgBackRest's asynchronous archiving finished")
