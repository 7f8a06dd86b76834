"""Node-local PostgreSQL configuration files: the settings a node needs and its standby role.

These functions touch a data directory, so they run on the node's own machine (through
the node-operation seam); in the lab that is this machine.
"""

from __future__ import annotations

import re
from pathlib import Path

from regionops.drivers.pgtools import chown_to

NODE_CONF = "regionops.conf"
INCLUDE_LINE = f"include_if_exists = '{NODE_CONF}'"
AUTO_CONF = "postgresql.auto.conf"

# Settings every node of a cluster shares.  wal_log_hints makes pg_rewind possible;
# slots and wal_keep_size keep WAL for a replica that is briefly away; short receiver
# and sender timeouts make a dead peer visible within seconds, not minutes.
#
# wal_receiver_timeout is what the failover's confirmation reads on each replica
# (regionops/decisions/failure.py): a replica hears a live primary at least every
# timeout/2 + RTT, so one whose receiver has been silent for the whole timeout (or has
# ended itself) has lost it.  8 s: a frozen primary is lost by every replica within 8 s
# (the failover's goal is 10 s), and a primary that stalls up to about 3.4 s on a 240 ms WAN
# link with jitter is never called down (timeout > 2 * (stall + RTT)).  Lower is faster
# but turns shorter stalls into failovers; the same as shipped in
# deployments/postgresql/regionops.conf.  wal_sender_timeout matches it: the primary drops
# a dead replica's sender as quickly.  Server-side TCP keepalives find a peer that
# vanished without a FIN (a host that lost power) in 5 + 3 * 2 = 11 s on idle connections.
COMMON_SETTINGS: dict[str, str] = {
    "wal_level": "replica",
    "max_wal_senders": "10",
    "max_replication_slots": "10",
    "wal_keep_size": "'256MB'",
    # A dead node's slot must not fill the primary's disk: past this the slot is lost
    # (the node needs a re-clone) instead.  Above monitoring's slot_retained_bytes default
    # (1 GiB), so the alert and region health speak up first.
    "max_slot_wal_keep_size": "'2GB'",
    "wal_log_hints": "on",
    "hot_standby": "on",
    "hot_standby_feedback": "on",
    "wal_receiver_status_interval": "'1s'",
    "wal_receiver_timeout": "'8s'",
    "wal_sender_timeout": "'8s'",
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
    "wal_retrieve_retry_interval": "'1s'",
    "shared_buffers": "'64MB'",
    "max_connections": "60",
    "logging_collector": "off",
    "log_line_prefix": "'%m [%p] %q%u@%d '",
    "unix_socket_directories": "''",
}


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def write_node_settings(
    data_dir: Path, *, node: str, host: str, port: int, os_user: str | None, extra: dict[str, str] | None = None
) -> None:
    """Write the node's own settings file and make postgresql.conf include it (idempotent)."""
    settings = {"listen_addresses": _quote(host), "port": str(port), "cluster_name": _quote(node)}
    settings |= COMMON_SETTINGS | (extra or {})
    body = "# written by regionops; node-specific settings\n" + "".join(f"{k} = {v}\n" for k, v in settings.items())
    (data_dir / NODE_CONF).write_text(body)
    main_conf = data_dir / "postgresql.conf"
    text = main_conf.read_text()
    if INCLUDE_LINE not in text:
        main_conf.write_text(text.rstrip("\n") + f"\n{INCLUDE_LINE}\n")
    chown_to(data_dir / NODE_CONF, os_user)


ARCHIVE_CONF = "regionops-archive.conf"
ARCHIVE_INCLUDE_LINE = f"include_if_exists = '{ARCHIVE_CONF}'"


def write_archive_settings(data_dir: Path, settings: dict[str, str], os_user: str | None) -> bool:
    """Write the node's WAL-archiving settings (its own include file, read after regionops.conf).

    Kept apart from :func:`write_node_settings` so that a re-clone, which rewrites the
    node's settings, keeps archiving.  Returns True when the file changed (a running
    server needs a restart for archive_mode and the socket directory).
    """
    body = "# written by regionops; WAL archiving through pgBackRest\n" + "".join(
        f"{k} = {v}\n" for k, v in settings.items()
    )
    path = data_dir / ARCHIVE_CONF
    changed = not path.exists() or path.read_text() != body
    if changed:
        path.write_text(body)
    main_conf = data_dir / "postgresql.conf"
    text = main_conf.read_text()
    if ARCHIVE_INCLUDE_LINE not in text:
        main_conf.write_text(text.rstrip("\n") + f"\n{ARCHIVE_INCLUDE_LINE}\n")
    chown_to(path, os_user)
    return changed


def write_hba(data_dir: Path, lines: list[str], os_user: str | None) -> None:
    """Replace pg_hba.conf with ``lines``."""
    (data_dir / "pg_hba.conf").write_text("# written by regionops\n" + "\n".join(lines) + "\n")
    chown_to(data_dir / "pg_hba.conf", os_user)


def _set_auto_conf(data_dir: Path, settings: dict[str, str | None]) -> None:
    """Set (or remove, for None) keys in postgresql.auto.conf, keeping every other line."""
    path = data_dir / AUTO_CONF
    lines = path.read_text().splitlines() if path.exists() else ["# Do not edit this file manually!"]
    keys = set(settings)
    kept = [ln for ln in lines if not re.match(r"\s*(" + "|".join(map(re.escape, keys)) + r")\s*=", ln)]
    kept += [f"{k} = {_quote(v)}" for k, v in settings.items() if v is not None]
    path.write_text("\n".join(kept) + "\n")


def configure_standby(data_dir: Path, *, primary_conninfo: str, slot: str | None, os_user: str | None) -> None:
    """Make the data directory start as a streaming replica of ``primary_conninfo``.

    Writes primary_conninfo and primary_slot_name into postgresql.auto.conf and creates
    standby.signal; a running server needs a restart or reload to pick it up.
    """
    _set_auto_conf(data_dir, {"primary_conninfo": primary_conninfo, "primary_slot_name": slot})
    (data_dir / "standby.signal").touch()
    for name in (AUTO_CONF, "standby.signal"):
        chown_to(data_dir / name, os_user)


def clear_standby(data_dir: Path) -> None:
    """Remove the standby role (used before starting a restored primary)."""
    _set_auto_conf(data_dir, {"primary_conninfo": None, "primary_slot_name": None})
    (data_dir / "standby.signal").unlink(missing_ok=True)


def slot_name(node: str) -> str:
    """The replication slot a node streams from: node names with '-' are not valid slot names."""
    return re.sub(r"[^a-z0-9_]", "_", node.lower())


def set_auto_conf(data_dir: Path, settings: dict[str, str | None], os_user: str | None) -> None:
    """Set (or remove, for None) settings in a stopped server's postgresql.auto.conf.

    postgresql.auto.conf is read last, so these win over postgresql.conf and its includes.
    """
    _set_auto_conf(data_dir, settings)
    chown_to(data_dir / AUTO_CONF, os_user)


RECOVERY_SETTINGS = (
    "restore_command",
    "recovery_target",
    "recovery_target_name",
    "recovery_target_lsn",
    "recovery_target_action",
    "recovery_target_timeline",
    "recovery_target_inclusive",
)


def configure_recovery_target(data_dir: Path, target: dict[str, str], os_user: str | None) -> None:
    """Make a restored data directory recover to ``target`` and pause there, not as a standby.

    There is no WAL archive to restore from (the backup carries its WAL), but archive
    recovery insists on a restore_command: one that always fails makes it read pg_wal.
    """
    (data_dir / "standby.signal").unlink(missing_ok=True)
    settings: dict[str, str | None] = {k: None for k in RECOVERY_SETTINGS}
    settings |= {
        "restore_command": "false",
        "recovery_target_action": "pause",
        "recovery_target_timeline": "current",
        **target,
    }
    _set_auto_conf(data_dir, settings)
    (data_dir / "recovery.signal").touch()
    for name in (AUTO_CONF, "recovery.signal"):
        chown_to(data_dir / name, os_user)


def clear_recovery_target(data_dir: Path, os_user: str | None) -> None:
    """Remove the recovery target settings and recovery.signal (after the restore is done)."""
    _set_auto_conf(data_dir, {k: None for k in RECOVERY_SETTINGS})
    (data_dir / "recovery.signal").unlink(missing_ok=True)
    chown_to(data_dir / AUTO_CONF, os_user)


def configured_port(data_dir: Path) -> int | None:
    """The port a data directory's configuration sets (the last setting wins, as in PostgreSQL).

    Reads postgresql.conf, the node's own settings file and postgresql.auto.conf in the
    order PostgreSQL applies them; None when none sets a port.
    """
    port: int | None = None
    for name in ("postgresql.conf", NODE_CONF, AUTO_CONF):
        path = data_dir / name
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            found = re.match(r"\s*port\s*=?\s*'?(\d+)'?", line)
            if found:
                port = int(found.group(1))
    return port
