"""Publishing runbook results to a Prometheus Pushgateway (httpx, injectable transport).

A batch job (a backup, a restore verification) cannot be scraped when it is over, so
it pushes its result: ``PUT /metrics/job/<job>/cluster/<cluster>`` replaces that
group's metrics, and Prometheus scrapes the Pushgateway (``honor_labels``) so the
series keep their ``cluster`` label.  The alert rules (``deployments/monitoring/rules/
runbooks.rules.yml``) read them.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from regionops.errors import ExternalSystemError, TransientError

_METRIC = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


class Gauge(BaseModel):
    """One gauge sample to push."""

    name: str
    help: str
    value: float


class Pushed(BaseModel):
    """What was pushed where."""

    url: str
    job: str
    cluster: str
    metrics: dict[str, float]

    def sentence(self) -> str:
        shown = ", ".join(f"{k}={v:g}" for k, v in self.metrics.items())
        return f"published {shown} for cluster {self.cluster} (job {self.job}) to {self.url}"


def exposition(gauges: list[Gauge]) -> str:
    """The text exposition format of ``gauges`` (the group's labels come from the URL)."""
    lines = []
    for g in gauges:
        if not _METRIC.match(g.name):
            raise ValueError(f"not a Prometheus metric name: {g.name!r}")
        lines += [f"# HELP {g.name} {g.help}", f"# TYPE {g.name} gauge", f"{g.name} {g.value!r}"]
    return "\n".join(lines) + "\n"


class PushgatewayClient:
    """``PUT`` a group of gauges.  ``client`` is injected in tests."""

    def __init__(self, base_url: str, client: httpx.Client | None = None, timeout: float = 5.0):
        self.base_url = base_url.rstrip("/")
        self.client = client or httpx.Client(timeout=timeout)

    def push(self, job: str, cluster: str, gauges: list[Gauge]) -> Pushed:
        """Replace the metrics of group ``{job, cluster}`` with ``gauges``."""
        url = f"{self.base_url}/metrics/job/{quote(job, safe='')}/cluster/{quote(cluster, safe='')}"
        try:
            resp = self.client.put(
                url, content=exposition(gauges).encode(), headers={"Content-Type": "text/plain; version=0.0.4"}
            )
        except httpx.HTTPError as exc:
            raise TransientError(f"Pushgateway at {self.base_url} did not answer: {type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 500:
            raise TransientError(f"Pushgateway answered {resp.status_code}: {resp.text[:200]}")
        if resp.status_code >= 300:
            raise ExternalSystemError(f"Pushgateway refused the push ({resp.status_code}): {resp.text[:200]}")
        return Pushed(url=url, job=job, cluster=cluster, metrics={g.name: g.value for g in gauges})
