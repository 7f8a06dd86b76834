"""Observed state as plain data, with no driver behind it: what decisions may import.

Drivers produce these; pure decisions (:mod:`regionops.decisions`) consume them without
importing a driver (and with it psycopg, boto3 or httpx).
"""

from __future__ import annotations

from datetime import datetime
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
        return (
            f"{self.node} is a replica on timeline {self.timeline}, replayed {self.replay_lsn} "
            f"({recv})"
        )
