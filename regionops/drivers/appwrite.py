"""Writes through a regional application's ``POST /write`` endpoint (httpx, injectable transport).

The runbooks prove "writes work" the way users see it: through the app, which resolves
the cluster's writer DNS record per request.  A row accepted this way shows that DNS,
the app and the new primary agree; its LSN lets the caller check that every replica
replayed it.
"""

from __future__ import annotations

import time

import httpx
from pydantic import BaseModel

from regionops.lsn import Lsn
from regionops.topology import Topology


class AppWrite(BaseModel):
    """What one ``POST /write`` did.  ``accepted`` means HTTP 201 with a row id."""

    region: str
    url: str
    accepted: bool
    status_code: int | None = None
    row_id: int | None = None
    lsn: Lsn | None = None
    node: str | None = None  # the node the app wrote to (where the writer record pointed)
    error: str | None = None
    latency_ms: float | None = None

    def sentence(self) -> str:
        """One line for logs and reports."""
        if self.accepted:
            return f"app {self.region} wrote row {self.row_id} on {self.node} at {self.lsn}"
        if self.status_code is None:
            return f"app {self.region} is unreachable at {self.url} ({self.error})"
        return f"app {self.region} refused the write: HTTP {self.status_code} ({self.error})"


class HttpAppWriter:
    """``POST {base_url}/write`` with a JSON payload.  Never raises: failures are part of the result."""

    def __init__(self, client: httpx.Client | None = None, timeout: float = 3.0):
        self.client = client or httpx.Client(timeout=timeout)

    def write(self, region: str, base_url: str, payload: str) -> AppWrite:
        """Insert one row through the app of ``region``."""
        url = base_url.rstrip("/") + "/write"
        started = time.perf_counter()
        try:
            resp = self.client.post(url, json={"payload": payload})
        except httpx.HTTPError as exc:
            return AppWrite(region=region, url=url, accepted=False, error=f"{type(exc).__name__}: {exc}")
        latency = round((time.perf_counter() - started) * 1000, 1)
        try:
            body = resp.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        accepted = resp.status_code == 201 and isinstance(body.get("id"), int)
        lsn = body.get("lsn")
        return AppWrite(
            region=region,
            url=url,
            accepted=accepted,
            status_code=resp.status_code,
            row_id=body.get("id") if accepted else None,
            lsn=Lsn.parse(lsn) if accepted and lsn else None,
            node=body.get("node"),
            error=None if accepted else str(body.get("error") or resp.reason_phrase),
            latency_ms=latency,
        )

    def close(self) -> None:
        """Release the HTTP connections."""
        self.client.close()


def app_writer_for(topology: Topology, timeout: float = 3.0) -> HttpAppWriter:
    """What writes through the topology's regional apps."""
    return HttpAppWriter(timeout=timeout)
