"""Reading Prometheus' HTTP API (httpx, injectable transport): the alerts it has firing.

Region health adds them to its report when the topology names a Prometheus, so the
runbook's own probes and the monitoring system's view sit side by side.  Never raises:
an unreachable Prometheus is part of the result.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel


class PrometheusAlert(BaseModel):
    """One alert Prometheus holds (pending or firing)."""

    alertname: str
    state: str
    labels: dict[str, str]
    summary: str = ""

    def sentence(self) -> str:
        where = ", ".join(f"{k}={self.labels[k]}" for k in ("cluster", "node", "region") if k in self.labels)
        return f"{self.alertname} ({where}) {self.state}: {self.summary}".rstrip(": ")


class PrometheusView(BaseModel):
    """What Prometheus said, or why it could not be asked."""

    url: str
    reachable: bool
    alerts: list[PrometheusAlert] = []
    error: str | None = None

    def firing(self) -> list[PrometheusAlert]:
        return [a for a in self.alerts if a.state == "firing"]

    def sentence(self) -> str:
        if not self.reachable:
            return f"Prometheus at {self.url} did not answer ({self.error})"
        firing = self.firing()
        if not firing:
            return f"Prometheus at {self.url} has no alert firing"
        return f"Prometheus at {self.url} has {len(firing)} alert(s) firing: " + "; ".join(a.sentence() for a in firing)


class PrometheusClient:
    """``GET /api/v1/alerts`` and instant queries.  ``client`` is injected in tests."""

    def __init__(self, base_url: str, client: httpx.Client | None = None, timeout: float = 5.0):
        self.base_url = base_url.rstrip("/")
        self.client = client or httpx.Client(timeout=timeout)

    def alerts(self) -> PrometheusView:
        """Every pending and firing alert."""
        try:
            resp = self.client.get(f"{self.base_url}/api/v1/alerts")
            resp.raise_for_status()
            raw = resp.json()["data"]["alerts"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            return PrometheusView(url=self.base_url, reachable=False, error=f"{type(exc).__name__}: {exc}")
        alerts = [
            PrometheusAlert(
                alertname=a["labels"].get("alertname", "?"),
                state=a.get("state", "?"),
                labels=a["labels"],
                summary=(a.get("annotations") or {}).get("summary", ""),
            )
            for a in raw
        ]
        return PrometheusView(url=self.base_url, reachable=True, alerts=alerts)

    def vector(self, expr: str) -> list[dict[str, Any]] | None:
        """The series an instant query returns now (``GET /api/v1/query``); None when Prometheus did not answer."""
        try:
            resp = self.client.get(f"{self.base_url}/api/v1/query", params={"query": expr})
            resp.raise_for_status()
            return list(resp.json()["data"]["result"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None
