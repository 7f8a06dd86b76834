"""HTTP probes of the regional applications (httpx, with an injectable transport)."""

from __future__ import annotations

import time
from typing import Protocol

import httpx

from regionops.model.probes import AppProbe


class AppProber(Protocol):
    def probe(self, region: str, base_url: str) -> AppProbe: ...


class HttpAppProber:
    """Probes ``GET {base_url}/health``.  Never raises: failures are part of the result."""

    def __init__(self, client: httpx.Client | None = None, timeout: float = 3.0):
        self.client = client or httpx.Client(timeout=timeout)

    def probe(self, region: str, base_url: str) -> AppProbe:
        """Probe one app's health endpoint."""
        url = base_url.rstrip("/") + "/health"
        started = time.perf_counter()
        try:
            resp = self.client.get(url)
        except httpx.HTTPError as exc:
            return AppProbe(region=region, url=url, reachable=False, error=f"{type(exc).__name__}: {exc}")
        latency = (time.perf_counter() - started) * 1000
        try:
            body = resp.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        return AppProbe(
            region=region,
            url=url,
            reachable=True,
            status_code=resp.status_code,
            status=body.get("status"),
            version=body.get("version"),
            database=body.get("database"),
            error=body.get("error") if resp.status_code != 200 else None,
            latency_ms=round(latency, 1),
        )


def request_path(client: httpx.Client, base_url: str, path: str) -> int | None:
    """GET ``base_url + path`` (traffic for the release gates); the status code, None when unreachable."""
    try:
        return client.get(base_url.rstrip("/") + path).status_code
    except httpx.HTTPError:
        return None
