"""Delivering alert events to Prefect: a one-method protocol and the real implementation.

The receiver answers Alertmanager only after the Prefect server has accepted the
events, so a 200 means "the server has them" and any failure becomes a 503 that
Alertmanager retries.  ``prefect.events.emit_event`` cannot promise that: it hands the
event to a background worker and returns.  The real emitter therefore posts the batch
to the server's ``POST /api/events`` endpoint (through the Prefect client), which
answers 204 once the events are published to the server's event pipeline (the same
pipeline the websocket feeds, and the one the triggers service consumes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from prefect.client.orchestration import PrefectClient
from prefect.events import Event
from prefect.settings import get_current_settings

from regionops.alerting.intents import AlertEvent
from regionops.errors import ConfigurationError, TransientError


class EmitFailed(TransientError):
    """The events could not be delivered; nothing is recorded as sent, so a retry may succeed."""


class EventEmitter(Protocol):
    """Anything that delivers a batch of alert events, or raises EmitFailed."""

    async def emit(self, events: Sequence[AlertEvent]) -> None:
        """Deliver every event in ``events`` before returning."""


def to_prefect_event(event: AlertEvent) -> Event:
    """The Prefect ``Event`` for an alert event (the id is kept: it is the idempotency key)."""
    return Event(id=event.id, event=event.event, resource=event.resource, payload=event.payload)


class PrefectEventEmitter:
    """Posts events to a Prefect server's events API and waits for its answer."""

    def __init__(self, api_url: str | None = None, timeout_seconds: float = 10.0):
        settings = get_current_settings()
        url = api_url or (str(settings.api.url) if settings.api.url else None)
        if not url:
            # Without a URL the Prefect client would start a throwaway in-process
            # server: events would be "delivered" where no trigger ever sees them.
            raise ConfigurationError("no Prefect API URL: set PREFECT_API_URL or pass --prefect-api-url")
        self.api_url = url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self._auth_string = settings.api.auth_string.get_secret_value() if settings.api.auth_string else None
        self._api_key = settings.api.key.get_secret_value() if settings.api.key else None

    async def emit(self, events: Sequence[AlertEvent]) -> None:
        """Post ``events`` in one request.  Raises EmitFailed on any failure."""
        if not events:
            return
        body = [to_prefect_event(e).model_dump(mode="json") for e in events]
        try:
            async with PrefectClient(
                self.api_url,
                auth_string=self._auth_string,
                api_key=self._api_key,
                httpx_settings={"timeout": self.timeout_seconds},
            ) as client:
                response = await client.request("POST", "/events", json=body)
        except Exception as exc:  # noqa: BLE001 - any failure means "not delivered"; the type is kept
            raise EmitFailed(
                f"could not deliver {len(events)} event(s) to the Prefect API at {self.api_url}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if response.status_code >= 300:
            raise EmitFailed(
                f"the Prefect API at {self.api_url} refused {len(events)} event(s): "
                f"HTTP {response.status_code} {response.text[:200]}"
            )

    def describe(self) -> str:
        """Where events go, safe to log."""
        return f"Prefect API {self.api_url}"
