"""HTTP probes of the regional applications (httpx, with an injectable transport)."""

from __future__ import annotations

import time
from typing import Protocol

import httpx

from regionops.model.probes import AppProbe
from regionops.topology import Topology


class AppProber(Protocol):
    """Probes one regional app's health; never raises."""

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


class TrafficMaker(Protocol):
    """Requests an app's paths so a gate has traffic to judge even in a quiet region."""

    def request(self, base_url: str, path: str) -> int | None: ...


class HttpTrafficMaker:
    """``GET {base_url}{path}``; the status code, None when unreachable.  Close it (or use ``with``)."""

    def __init__(self, client: httpx.Client | None = None, timeout: float = 5.0):
        self.client = client or httpx.Client(timeout=timeout)

    def request(self, base_url: str, path: str) -> int | None:
        """Request one path of the app at ``base_url``."""
        try:
            return self.client.get(base_url.rstrip("/") + path).status_code
        except httpx.HTTPError:
            return None

    def close(self) -> None:
        """Release the HTTP connections."""
        self.client.close()

    def __enter__(self) -> HttpTrafficMaker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prober_for(topology: Topology, timeout: float = 3.0) -> AppProber:
    """The prober of the topology's regional apps (every app speaks HTTP today)."""
    return HttpAppProber(timeout=timeout)


def traffic_maker_for(topology: Topology, timeout: float = 5.0) -> HttpTrafficMaker:
    """What requests the topology's apps' probe paths during a bake."""
    return HttpTrafficMaker(timeout=timeout)
