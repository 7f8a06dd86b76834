"""Observed state as plain data, with no driver behind it: what decisions may import.

Drivers produce these; pure decisions (:mod:`regionops.decisions`) consume them without
importing a driver (and with it psycopg, boto3 or httpx).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, PrivateAttr

from regionops.lsn import Lsn

Role = Literal["primary", "replica", "unknown"]


class CanaryWrite(BaseModel):
    """One heartbeat row the DR drill's canary writer sent through the writer endpoint."""

    seq: int
    sent_at: datetime
    acked: bool = False
    acked_at: datetime | None = None
    node: str | None = None  # where the writer record pointed
    lsn: str | None = None  # the node's WAL insert position at the write (what a lost write's bytes are measured by)
    error: str | None = None
    late_ack_at: datetime | None = None  # committed after the canary had given up on it
    _given_up: bool = PrivateAttr(False)

    def sentence(self) -> str:
        """One line for logs and reports."""
        if self.acked:
            return f"canary write {self.seq} acknowledged by {self.node}"
        if self.late_ack_at:
            return f"canary write {self.seq} committed by {self.node} after the client gave up on it"
        return f"canary write {self.seq} not acknowledged ({self.error})"


class WalReceiver(BaseModel):
    """A replica's WAL receiver, as pg_stat_wal_receiver shows it."""

    status: str
    sender_host: str | None = None
    sender_port: int | None = None
    received_tli: int | None = None
    flushed_lsn: Lsn | None = None
    slot_name: str | None = None
    last_msg_age_seconds: float | None = None


class ReplicationConnection(BaseModel):
    """One replica connected to a primary, as pg_stat_replication shows it."""

    application_name: str
    state: str
    client_addr: str | None = None
    sent_lsn: Lsn | None = None
    flush_lsn: Lsn | None = None
    replay_lsn: Lsn | None = None
    replay_lag_seconds: float | None = None
    sync_state: str | None = None


class Slot(BaseModel):
    """A physical replication slot."""

    slot_name: str
    active: bool
    restart_lsn: Lsn | None = None
    wal_status: str | None = None  # reserved, extended, unreserved or lost (its WAL is gone)
    retained_bytes: int | None = None  # WAL the slot holds back on this node (from restart_lsn)


class NodeState(BaseModel):
    """Everything observed about one node at one moment.  ``reachable=False`` carries ``error``."""

    node: str
    reachable: bool
    error: str | None = None
    role: Role = "unknown"
    system_identifier: str | None = None
    server_version: int | None = None
    timeline: int | None = None
    current_lsn: Lsn | None = None
    receive_lsn: Lsn | None = None
    replay_lsn: Lsn | None = None
    replay_paused: bool | None = None
    replay_lag_seconds: float | None = None
    read_only: bool | None = None
    wal_receiver: WalReceiver | None = None
    replication: list[ReplicationConnection] = []
    slots: list[Slot] = []
    max_slot_wal_keep_size_mb: int | None = None  # -1: slots may hold back WAL without limit
    observed_at: datetime

    @property
    def position(self) -> Lsn | None:
        """The newest WAL this node has applied: current LSN on a primary, replayed on a replica."""
        return self.current_lsn if self.role == "primary" else self.replay_lsn

    def sentence(self) -> str:
        """One line for logs and reports."""
        if not self.reachable:
            return f"{self.node} is unreachable ({self.error})"
        if self.role == "primary":
            return (
                f"{self.node} is primary on timeline {self.timeline} at {self.current_lsn} "
                f"with {len(self.replication)} replica(s) connected"
            )
        recv = self.wal_receiver.status if self.wal_receiver else "no WAL receiver"
        return f"{self.node} is a replica on timeline {self.timeline}, replayed {self.replay_lsn} ({recv})"


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
            "observed_at": observed_at or datetime.now(UTC),
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


class CommonPoint(BaseModel):
    """The one point in a cluster's history at which several nodes were read (a consistency check, a proof).

    Writers to the compared tables were held on the primary for ``held_ms`` while the
    point was fixed: the primary's snapshot and WAL position ``lsn`` were taken under a
    brief table lock, and each replica opened its snapshot once it had replayed ``lsn``
    and before the lock was released, so every node shows exactly the same committed
    rows of those tables, however fast the application writes.
    """

    primary: str
    lsn: Lsn
    held_ms: float  # how long writers to the tables waited for the point (lock wait included)
    nodes: list[str] = []  # replicas read at the point
    missed: dict[str, str] = {}  # replica -> why it could not be read at the point
    attempts: int = 1

    def sentence(self) -> str:
        """One line for a report."""
        missed = "".join(f"; {n} not at the point ({why})" for n, why in self.missed.items())
        return (
            f"common point {self.lsn} on {self.primary}"
            + (f" and {', '.join(self.nodes)}" if self.nodes else "")
            + f", writers held {self.held_ms:.0f} ms"
            + (f" (attempt {self.attempts})" if self.attempts > 1 else "")
            + missed
        )
