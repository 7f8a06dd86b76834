"""What the alert receiver already sent: a small, bounded, persisted memory.

Two things are remembered, both with an expiry:

- ``seen``: the alerts (``fingerprint@startsAt``) that became an event.  Alertmanager
  re-sends a firing alert on every ``repeat_interval`` and retries failed deliveries,
  and on-call engineers re-post payloads by hand: none of that may start a second run.
- ``requests``: per trigger bucket (``failover:core``), the alert whose event opened
  the deployment trigger's window.  Used only to *say* what will happen to a later,
  different alert (absorbed by the window, or waiting on the cluster lock); the
  trigger itself decides.

The file is rewritten atomically after every change, so a receiver restart does not
fire again.  It is a cache: a lost or corrupt file costs only the first line of
defence (the deterministic event id and the trigger window still hold).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from regionops.alerting.intents import AlertEvent

logger = logging.getLogger(__name__)

DEFAULT_TTL_SECONDS = 12 * 3600
DEFAULT_MAX_ENTRIES = 2048
LEDGER_FILE = "alert-receiver-ledger.json"


class Request(BaseModel):
    """An event that opened a trigger window for a bucket."""

    cluster: str
    intent: str
    alertname: str
    fingerprint: str
    event_id: str
    at: float = Field(description="epoch seconds when the event was sent")
    until: float = Field(description="epoch seconds when the trigger window closes")


class LedgerState(BaseModel):
    """The file's content."""

    version: int = 1
    seen: dict[str, float] = Field(default_factory=dict, description="dedup key -> epoch seconds sent")
    requests: dict[str, Request] = Field(default_factory=dict, description="bucket -> window opener")


class AlertLedger:
    """Seen alerts and open trigger windows; persisted to ``path`` when given (else memory only)."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.time,
    ):
        if ttl_seconds <= 0 or max_entries <= 0:
            raise ValueError("ttl_seconds and max_entries must be positive")
        self.path = path
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self.clock = clock
        self.state = self._load() if path is not None else LedgerState()

    # -- queries ------------------------------------------------------------------
    def is_duplicate(self, dedup_key: str) -> bool:
        """True when this alert already became an event within the TTL."""
        sent = self.state.seen.get(dedup_key)
        return sent is not None and self.clock() - sent < self.ttl_seconds

    def open_window(self, bucket: str) -> Request | None:
        """The request whose trigger window for ``bucket`` is still open, if any."""
        req = self.state.requests.get(bucket)
        return req if req is not None and req.until > self.clock() else None

    def other_open_requests(self, cluster: str, intent: str) -> list[Request]:
        """Open windows for ``cluster`` of *other* intents (a failover while a resync arrives)."""
        now = self.clock()
        return [
            r for r in self.state.requests.values() if r.cluster == cluster and r.intent != intent and r.until > now
        ]

    # -- changes ------------------------------------------------------------------
    def record(self, event: AlertEvent, cooldown_seconds: float) -> bool:
        """Remember that ``event`` was sent.  True when it opened its bucket's trigger window."""
        now = self.clock()
        self.state.seen[event.dedup_key] = now
        opened = self.open_window(event.bucket()) is None
        if opened:
            self.state.requests[event.bucket()] = Request(
                cluster=event.cluster,
                intent=event.intent,
                alertname=event.resource.get("regionops.alertname", ""),
                fingerprint=event.payload["fingerprint"],
                event_id=str(event.id),
                at=now,
                until=now + cooldown_seconds,
            )
        return opened

    def save(self) -> None:
        """Prune (TTL, then size) and write the file atomically."""
        self._prune()
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".ledger-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self.state.model_dump_json())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _prune(self) -> None:
        now = self.clock()
        seen = {k: t for k, t in self.state.seen.items() if now - t < self.ttl_seconds}
        if len(seen) > self.max_entries:
            # Keep the newest: an old alert coming back after eviction is still
            # caught by the event id and the trigger window.
            seen = dict(sorted(seen.items(), key=lambda kv: kv[1])[-self.max_entries :])
        self.state.seen = seen
        self.state.requests = {b: r for b, r in self.state.requests.items() if r.until > now}

    def _load(self) -> LedgerState:
        assert self.path is not None
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return LedgerState()
        try:
            state = LedgerState.model_validate(json.loads(text))
        except (json.JSONDecodeError, ValidationError) as exc:
            # Refusing to start would drop real alerts during an incident; start empty,
            # keep the bad file for a human, and say so loudly.
            aside = self.path.with_suffix(".corrupt")
            os.replace(self.path, aside)
            logger.error(
                "alert ledger %s is unreadable (%s); moved to %s and starting empty",
                self.path,
                str(exc).splitlines()[0],
                aside,
            )
            return LedgerState()
        self.state = state
        self._prune()
        return self.state
