"""Observed state as plain data, with no driver behind it: what decisions may import.

Drivers produce these; pure decisions (:mod:`regionops.decisions`) consume them without
importing a driver (and with it psycopg, boto3 or httpx).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, PrivateAttr


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
