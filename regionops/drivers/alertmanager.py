"""Alertmanager's API v2 (httpx, injectable transport): silences and the alerts it holds.

Planned work (a switchover, a drill) silences the alerts it will cause, then lifts the
silence once those alerts have resolved.  HTTP failures become project errors here:
connection problems and 5xx are :class:`TransientError`, other answers
:class:`ExternalSystemError` naming the status and Alertmanager's message.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic import BaseModel, Field

from regionops.errors import ConfigurationError, ExternalSystemError, TransientError
from regionops.topology import Topology


class Matcher(BaseModel):
    """One label matcher of a silence or an alert filter (``name="value"`` or ``name=~"regex"``)."""

    name: str
    value: str
    is_regex: bool = False
    is_equal: bool = True

    def text(self) -> str:
        """The matcher as Alertmanager writes it: ``alertname=~"A|B"``."""
        op = ("=~" if self.is_regex else "=") if self.is_equal else ("!~" if self.is_regex else "!=")
        return f'{self.name}{op}"{self.value}"'


class Silence(BaseModel):
    """A silence as created (or read back)."""

    id: str
    matchers: list[Matcher]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str

    def sentence(self) -> str:
        """``silenced {cluster="core", ...} until 12:00:00 UTC (silence 1f2e...)``."""
        until = self.ends_at.astimezone(UTC).strftime("%H:%M:%S UTC")
        return f"silenced {{{', '.join(m.text() for m in self.matchers)}}} until {until} (silence {self.id})"


class ActiveAlert(BaseModel):
    """An alert Alertmanager holds, firing or suppressed."""

    fingerprint: str
    labels: dict[str, str]
    state: str = Field(description="active, suppressed or unprocessed")
    silenced_by: list[str] = []
    starts_at: datetime | None = None

    def sentence(self) -> str:
        return (
            f"{self.labels.get('alertname')} {{{', '.join(f'{k}={v}' for k, v in sorted(self.labels.items()))}}} "
            f"({self.state})"
        )


class AlertmanagerClient:
    """The few API v2 calls the runbooks make.  ``client`` is injected in tests."""

    def __init__(self, base_url: str, client: httpx.Client | None = None, timeout: float = 5.0):
        self.base_url = base_url.rstrip("/")
        self.client = client or httpx.Client(timeout=timeout)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.base_url}/api/v2{path}"
        try:
            resp = self.client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise TransientError(
                f"Alertmanager at {self.base_url} did not answer {method} {path}: {type(exc).__name__}: {exc}"
            ) from exc
        if resp.status_code >= 500:
            raise TransientError(f"Alertmanager {method} {path} answered {resp.status_code}: {resp.text[:200]}")
        if resp.status_code >= 400:
            raise ExternalSystemError(f"Alertmanager {method} {path} answered {resp.status_code}: {resp.text[:200]}")
        return resp.json() if resp.content else None

    def create_silence(
        self,
        matchers: list[Matcher],
        duration_seconds: float,
        created_by: str,
        comment: str,
        now: datetime | None = None,
    ) -> Silence:
        """Silence alerts matching every matcher from now for ``duration_seconds``."""
        start = now or datetime.now(UTC)
        end = start + timedelta(seconds=duration_seconds)
        body = {
            "matchers": [
                {"name": m.name, "value": m.value, "isRegex": m.is_regex, "isEqual": m.is_equal} for m in matchers
            ],
            "startsAt": start.isoformat(),
            "endsAt": end.isoformat(),
            "createdBy": created_by,
            "comment": comment,
        }
        answer = self._call("POST", "/silences", json=body)
        silence_id = (answer or {}).get("silenceID")
        if not silence_id:
            raise ExternalSystemError(f"Alertmanager created a silence but returned no id: {answer!r}")
        return Silence(
            id=silence_id, matchers=matchers, starts_at=start, ends_at=end, created_by=created_by, comment=comment
        )

    def silence_state(self, silence_id: str) -> str | None:
        """``active``, ``pending`` or ``expired``; None when Alertmanager does not know the id."""
        try:
            answer = self._call("GET", f"/silence/{silence_id}")
        except ExternalSystemError:
            return None
        return ((answer or {}).get("status") or {}).get("state")

    def expire_silence(self, silence_id: str) -> None:
        """End a silence now (an already expired one is fine)."""
        try:
            self._call("DELETE", f"/silence/{silence_id}")
        except ExternalSystemError:
            if self.silence_state(silence_id) != "expired":
                raise

    def alerts(self, matchers: list[Matcher]) -> list[ActiveAlert]:
        """Alerts matching ``matchers`` that Alertmanager holds now, silenced and inhibited included."""
        params = [("filter", m.text()) for m in matchers]
        params += [("active", "true"), ("silenced", "true"), ("inhibited", "true"), ("unprocessed", "true")]
        found = []
        for a in self._call("GET", "/alerts", params=params) or []:
            status = a.get("status") or {}
            found.append(
                ActiveAlert(
                    fingerprint=a["fingerprint"],
                    labels=a.get("labels") or {},
                    state=status.get("state", "unknown"),
                    silenced_by=status.get("silencedBy") or [],
                    starts_at=a.get("startsAt"),
                )
            )
        return found


def alertmanager_for(topology: Topology) -> AlertmanagerClient:
    """The Alertmanager of the topology's monitoring; refuses when the topology names none."""
    if not topology.monitoring.alertmanager_url:
        raise ConfigurationError("the topology names no Alertmanager (monitoring.alertmanager_url)")
    return AlertmanagerClient(topology.monitoring.alertmanager_url)
