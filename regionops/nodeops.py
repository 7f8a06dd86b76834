"""The node-operation seam: steps that touch a node's own machine (pg_ctl, data directory, WAL files).

ARCHITECTURE.md section 7: cluster-level steps (SQL, DNS) can run anywhere, but
starting, stopping, rewinding or re-cloning a node needs its disk, so those steps go
through a :class:`NodeOperator`.  :class:`LocalNodeOperator` performs them inline on
this machine, which is right for the lab and for a single-machine deployment.  On many
machines, an operator backed by a small node-operation deployment per region would run
the same calls on the node's own worker; the protocol is shaped for that.

Operations take node *names*, never connection objects, so a remote operator can ship
them as plain parameters; each returns a :class:`NodeOpResult` that reads as a sentence.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel

from regionops.drivers.pgconf import configure_standby, slot_name, write_node_settings
from regionops.drivers.pgdata import pg_basebackup, pg_rewind, read_control_data, read_wal_end
from regionops.drivers.pgtools import PgCtl, chown_to, process_state
from regionops.drivers.postgres import NodeState, conninfo_for
from regionops.errors import ExternalSystemError, PreconditionFailed, TransientError
from regionops.lsn import Lsn
from regionops.topology import Cluster, Topology
from regionops.waiting import poll_until

log = logging.getLogger(__name__)

StopMode = Literal["smart", "fast", "immediate"]
Operation = Literal["start", "stop", "configure-standby", "block-primary-start", "rewind", "reclone",
                    "remove-replaced"]

# Suffix of a data directory set aside by a reclone (kept until the new one is verified).
REPLACED_MARK = ".replaced-"
RECLONE_MARK = ".reclone-"


class NodeOpResult(BaseModel):
    """One node-local step: what was done to which node, whether anything changed, how long it took."""

    node: str
    operation: Operation
    changed: bool
    detail: str
    seconds: float = 0.0

    def sentence(self) -> str:
        """One line for logs and reports."""
        return self.detail


class ControlData(BaseModel):
    """What a data directory's control file says, readable while the server is down."""

    node: str
    cluster_state: str  # "in production", "shut down", "shut down in recovery", "in archive recovery", ...
    system_identifier: str
    timeline: int  # of the latest checkpoint
    checkpoint_lsn: Lsn
    min_recovery_lsn: Lsn | None = None
    wal_log_hints: bool
    data_checksums: bool
    standby_signal: bool

    @property
    def rewindable(self) -> bool:
        """pg_rewind needs hint bits WAL-logged: wal_log_hints or data checksums."""
        return self.wal_log_hints or self.data_checksums

    @property
    def was_primary(self) -> bool:
        """The server last ran as a primary (crashed or stopped), not in recovery."""
        return self.cluster_state in {"in production", "shut down", "shutting down"} and not self.standby_signal

    def sentence(self) -> str:
        role = "primary" if self.was_primary else "replica"
        return (
            f"{self.node}'s control file: {self.cluster_state} as a {role} on timeline {self.timeline}, "
            f"last checkpoint at {self.checkpoint_lsn}"
        )

    def last_known_state(self, error: str | None, observed_at: datetime | None = None) -> NodeState:
        """A down node's last known state, for the repair decision.

        A node that last ran as a primary is reported as one (so a crashed old primary
        is recognised as diverged and rewound); a stopped replica by its timeline and
        the position its control file guarantees.
        """
        common = {
            "node": self.node,
            "reachable": False,
            "error": error,
            "system_identifier": self.system_identifier,
            "timeline": self.timeline,
            "observed_at": observed_at or datetime.now(timezone.utc),
        }
        if self.was_primary:
            return NodeState(role="primary", current_lsn=self.checkpoint_lsn, **common)
        position = max(self.checkpoint_lsn, self.min_recovery_lsn or self.checkpoint_lsn)
        return NodeState(role="replica", replay_lsn=position, **common)


class WalEnd(BaseModel):
    """Where a stopped node's WAL ends (read from its pg_wal), and its last commit time."""

    node: str
    lsn: Lsn
    last_commit_at: datetime | None = None
    segment: str

    def sentence(self) -> str:
        commit = f", last commit at {self.last_commit_at:%H:%M:%S.%f} UTC" if self.last_commit_at else ""
        return f"{self.node}'s WAL on disk ends at {self.lsn} (segment {self.segment}{commit})"


class NodeOperator(Protocol):
    """Node-local steps of the runbooks.  Reads never change anything; every change returns a result."""

    def data_dir_exists(self, node: str) -> bool:
        """Whether the node's data directory holds a cluster (PG_VERSION present)."""
        ...

    def is_running(self, node: str) -> bool:
        """Whether a postmaster runs on the node's data directory."""
        ...

    def control_data(self, node: str) -> ControlData | None:
        """The node's control file, or None without a data directory."""
        ...

    def wal_end(self, node: str) -> WalEnd | None:
        """Where the node's WAL on disk ends (meaningful while it is stopped)."""
        ...

    def start(self, node: str) -> NodeOpResult:
        """Start the server and wait until it accepts connections."""
        ...

    def stop(self, node: str, mode: StopMode = "fast") -> NodeOpResult:
        """Stop the server (no change when it is not running)."""
        ...

    def configure_standby(self, node: str, primary: str) -> NodeOpResult:
        """Make the (stopped) node start as a streaming replica of ``primary`` with its own slot."""
        ...

    def block_primary_start(self, node: str) -> NodeOpResult:
        """Fence on disk: the node can only start in recovery (read-only), never as a primary."""
        ...

    def rewind(self, node: str, source: str) -> NodeOpResult:
        """pg_rewind the stopped node from ``source`` and configure it as a replica of it."""
        ...

    def reclone(self, node: str, source: str) -> NodeOpResult:
        """pg_basebackup from ``source`` into a new directory beside the old; swap only when it worked."""
        ...

    def remove_replaced(self, node: str) -> NodeOpResult:
        """Delete data directories a reclone set aside."""
        ...


class LocalNodeOperator:
    """Performs node operations on this machine: the lab, or a node's own worker."""

    def __init__(self, topology: Topology, cluster: str, start_timeout: int = 120):
        self.topology = topology
        self.cluster_name, self.cluster = topology.cluster(cluster)
        self.start_timeout = start_timeout

    # -- helpers ------------------------------------------------------------------------
    def data_dir(self, node: str) -> Path:
        return Path(self.topology.node(self.cluster_name, node).data_dir)

    def pgctl(self, node: str) -> PgCtl:
        """pg_ctl for the node's data directory (also for fault injection and rescue on this machine)."""
        return self._pgctl(node)

    def _pgctl(self, node: str, data_dir: Path | None = None) -> PgCtl:
        data = data_dir or self.data_dir(node)
        # The server log lives beside the data directory, which the server's user can write.
        return PgCtl(data, self.cluster.os_user, data.parent / f"{node}.log")

    def _source_conninfo(self, source: str, for_node: str) -> str:
        return replication_conninfo(self.cluster, source, for_node)

    def _write_own_settings(self, node: str, data_dir: Path) -> None:
        # pg_rewind and pg_basebackup copy the source's configuration files, including its
        # port and cluster_name: the node's own settings must be written back.
        spec = self.cluster.nodes[node]
        write_node_settings(data_dir, node=node, host=spec.host, port=spec.port, os_user=self.cluster.os_user)

    @staticmethod
    def _timed(started: float) -> float:
        return round(time.monotonic() - started, 2)

    # -- reads --------------------------------------------------------------------------
    def data_dir_exists(self, node: str) -> bool:
        return (self.data_dir(node) / "PG_VERSION").exists()

    def is_running(self, node: str) -> bool:
        return self.data_dir_exists(node) and self._pgctl(node).is_running()

    def control_data(self, node: str) -> ControlData | None:
        data = self.data_dir(node)
        if not (data / "PG_VERSION").exists():
            return None
        fields = read_control_data(data, self.cluster.os_user)
        try:
            min_recovery = Lsn.parse(fields["Minimum recovery ending location"])
            return ControlData(
                node=node,
                cluster_state=fields["Database cluster state"],
                system_identifier=fields["Database system identifier"],
                timeline=int(fields["Latest checkpoint's TimeLineID"]),
                checkpoint_lsn=Lsn.parse(fields["Latest checkpoint location"]),
                min_recovery_lsn=min_recovery if min_recovery.value else None,
                wal_log_hints=fields.get("wal_log_hints setting") == "on",
                data_checksums=fields.get("Data page checksum version", "0") != "0",
                standby_signal=(data / "standby.signal").exists(),
            )
        except (KeyError, ValueError) as exc:
            raise ExternalSystemError(f"pg_controldata output for {node} is not understood: {exc}") from exc

    def wal_end(self, node: str) -> WalEnd | None:
        data = self.data_dir(node)
        if not (data / "pg_wal").is_dir():
            return None
        found = read_wal_end(data, self.cluster.os_user)
        if found is None:
            return None
        lsn, last_commit, segment = found
        return WalEnd(node=node, lsn=lsn, last_commit_at=last_commit, segment=segment)

    # -- changes ------------------------------------------------------------------------
    def start(self, node: str) -> NodeOpResult:
        started = time.monotonic()
        ctl = self._pgctl(node)
        if ctl.is_running():
            return NodeOpResult(node=node, operation="start", changed=False, detail=f"{node} was already running")
        ctl.start(timeout=self.start_timeout)
        return NodeOpResult(node=node, operation="start", changed=True, seconds=self._timed(started),
                            detail=f"started {node} in {self._timed(started):.1f} s")

    def stop(self, node: str, mode: StopMode = "fast") -> NodeOpResult:
        started = time.monotonic()
        if not self.data_dir_exists(node):
            return NodeOpResult(node=node, operation="stop", changed=False,
                                detail=f"{node} has no data directory, so nothing runs there")
        ctl = self._pgctl(node)
        if not ctl.is_running():
            return NodeOpResult(node=node, operation="stop", changed=False, detail=f"{node} was not running")
        if mode == "immediate" and ctl.is_frozen():
            # A stopped (hung) postmaster never acts on pg_ctl's SIGQUIT: kill the instance.
            killed = kill_instance(ctl)
            return NodeOpResult(node=node, operation="stop", changed=True, seconds=self._timed(started),
                                detail=f"killed {node} (SIGKILL to {killed} frozen process(es)): a hung server "
                                       f"cannot honour an immediate stop")
        ctl.stop(mode, timeout=60)
        return NodeOpResult(node=node, operation="stop", changed=True, seconds=self._timed(started),
                            detail=f"stopped {node} ({mode}) in {self._timed(started):.1f} s")

    def configure_standby(self, node: str, primary: str) -> NodeOpResult:
        data = self.data_dir(node)
        if self._pgctl(node).is_running():
            raise PreconditionFailed(f"cannot configure {node} as a standby on disk while it runs; stop it first")
        configure_standby(data, primary_conninfo=self._source_conninfo(primary, node), slot=slot_name(node),
                          os_user=self.cluster.os_user)
        return NodeOpResult(node=node, operation="configure-standby", changed=True,
                            detail=f"configured {node} as a standby of {primary} (slot {slot_name(node)})")

    def block_primary_start(self, node: str) -> NodeOpResult:
        data = self.data_dir(node)
        if not (data / "PG_VERSION").exists():
            return NodeOpResult(node=node, operation="block-primary-start", changed=False,
                                detail=f"{node} has no data directory to fence")
        signal = data / "standby.signal"
        if signal.exists():
            return NodeOpResult(node=node, operation="block-primary-start", changed=False,
                                detail=f"{node} already has standby.signal: it can only start read-only")
        signal.touch()
        chown_to(signal, self.cluster.os_user)
        return NodeOpResult(node=node, operation="block-primary-start", changed=True,
                            detail=f"wrote standby.signal into {node}'s data directory: if anything starts it, "
                                   f"it starts read-only, never as a second primary")

    def rewind(self, node: str, source: str) -> NodeOpResult:
        started = time.monotonic()
        data = self.data_dir(node)
        if self._pgctl(node).is_running():
            raise PreconditionFailed(f"cannot rewind {node} while it runs; stop it first")
        # pg_rewind first finishes crash recovery of a crashed target in single-user mode,
        # which refuses to run with a standby.signal present (e.g. from our fence).
        for name in ("standby.signal", "recovery.signal"):
            (data / name).unlink(missing_ok=True)
        out = pg_rewind(data, self._source_conninfo(source, node), self.cluster.os_user)
        if "are on the same timeline" in out:
            # The source's pg_control still shows its old timeline (a promotion whose
            # checkpoint has not finished): pg_rewind then does nothing, and the node would
            # start on a diverged history.  Fail loudly; a CHECKPOINT on the source fixes it.
            raise TransientError(f"pg_rewind of {node} saw {source} on {node}'s own timeline; "
                                 f"run CHECKPOINT on {source} and retry")
        self._write_own_settings(node, data)
        configure_standby(data, primary_conninfo=self._source_conninfo(source, node), slot=slot_name(node),
                          os_user=self.cluster.os_user)
        summary = _rewind_summary(out)
        return NodeOpResult(node=node, operation="rewind", changed=True, seconds=self._timed(started),
                            detail=f"rewound {node} from {source} with pg_rewind in {self._timed(started):.1f} s "
                                   f"({summary}) and configured it as a standby of {source}")

    def reclone(self, node: str, source: str) -> NodeOpResult:
        started = time.monotonic()
        data = self.data_dir(node)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        fresh = data.with_name(f"{data.name}{RECLONE_MARK}{stamp}")
        if not data.parent.exists():
            data.parent.mkdir(parents=True)
            chown_to(data.parent, self.cluster.os_user)  # pg_basebackup runs as the server's user
        spec = self.cluster.nodes[source]
        info = conninfo_for(self.cluster, spec)
        try:
            pg_basebackup(fresh, host=spec.host, port=spec.port, user=self.cluster.replication_user,
                          os_user=self.cluster.os_user, password=info.password)
            self._write_own_settings(node, fresh)
            configure_standby(fresh, primary_conninfo=self._source_conninfo(source, node), slot=slot_name(node),
                              os_user=self.cluster.os_user)
        except Exception:
            # The old data directory was never touched: leave the node as it was.
            shutil.rmtree(fresh, ignore_errors=True)
            raise
        ctl = self._pgctl(node)
        if (data / "PG_VERSION").exists() and ctl.is_running():
            ctl.stop("fast", timeout=60)
        set_aside = None
        if data.exists():
            set_aside = data.with_name(f"{data.name}{REPLACED_MARK}{stamp}")
            data.rename(set_aside)
        fresh.rename(data)
        kept = f"; the old data directory is kept at {set_aside} until the node is verified" if set_aside else ""
        return NodeOpResult(node=node, operation="reclone", changed=True, seconds=self._timed(started),
                            detail=f"re-cloned {node} from {source} with pg_basebackup in "
                                   f"{self._timed(started):.1f} s{kept}")

    def remove_replaced(self, node: str) -> NodeOpResult:
        data = self.data_dir(node)
        old = sorted(data.parent.glob(f"{data.name}{REPLACED_MARK}*"))
        for path in old:
            shutil.rmtree(path)
        return NodeOpResult(node=node, operation="remove-replaced", changed=bool(old),
                            detail=f"removed {len(old)} set-aside data director{'y' if len(old) == 1 else 'ies'} "
                                   f"of {node}")


def kill_instance(ctl: PgCtl, timeout: float = 10) -> int:
    """SIGKILL a server's postmaster and every process it started; wait until they are gone.

    Returns how many processes were signalled.  Killing the children too matters: a
    stopped child would hold the shared memory and block the next start.
    """
    pids = ctl.instance_pids()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    poll_until(lambda: all(process_state(p) in (None, "Z") for p in pids), timeout=timeout, interval=0.05,
               what="the killed server's processes to exit")
    return len(pids)


def replication_conninfo(cluster: Cluster, primary: str, for_node: str) -> str:
    """The libpq string a replica ``for_node`` uses to stream from ``primary`` (primary_conninfo).

    application_name is the replica's name, so pg_stat_replication on the primary shows
    which node is which.
    """
    spec = cluster.nodes[primary]
    info = conninfo_for(cluster, spec, dbname="postgres")
    if cluster.replication_user != info.user:
        info = type(info)(info.host, info.port, info.dbname, cluster.replication_user, info.password)
    return info.libpq(application_name=for_node)


def _rewind_summary(output: str) -> str:
    """The lines of pg_rewind's output that say what it did."""
    wanted = ("servers diverged", "no rewind required", "need to copy")
    picked = [
        line.removeprefix("pg_rewind: ").strip()
        for line in output.splitlines()
        if any(w in line for w in wanted)
    ]
    return "; ".join(picked) or "done"


def node_operator_for(topology: Topology, cluster: str) -> NodeOperator:
    """The node operator for a cluster: inline on this machine (single-process mode, the lab)."""
    return LocalNodeOperator(topology, cluster)
