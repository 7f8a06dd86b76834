"""Reading the regional apps' metrics for the release gates and the drain's load check.

The gates depend on :class:`MetricsSource` only; :class:`HttpMetricsSource` reads each
app's ``GET /metrics`` directly (prometheus_client's parser).  A source reading the same
series through Prometheus can replace it without touching the gates.  Names are the
contract of :mod:`regionops.lab.app_metrics`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

import httpx
from prometheus_client.parser import text_string_to_metric_families

from regionops.model.release import MetricsSample
from regionops.topology import Topology

REQUESTS = "regionops_app_requests"
LATENCY = "regionops_app_request_duration_seconds"
VERSION = "regionops_app_version_info"
# Scrapes of /metrics are not user traffic: they would dilute error rates and latency.
EXCLUDED_ENDPOINTS = frozenset({"/metrics"})


class MetricsSource(Protocol):
    """Where gate measurements come from."""

    def sample(self, region: str, base_url: str) -> MetricsSample: ...


def parse_metrics(region: str, text: str, at: float = 0.0) -> MetricsSample:
    """A :class:`MetricsSample` from the exposition text of one app."""
    requests = errors = 0.0
    buckets: dict[float, float] = {}
    version = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("endpoint") in EXCLUDED_ENDPOINTS:
                continue
            if family.name == REQUESTS and sample.name == REQUESTS + "_total":
                requests += sample.value
                if labels.get("code", "").startswith("5"):
                    errors += sample.value
            elif family.name == LATENCY and sample.name == LATENCY + "_bucket":
                le = float(labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
            elif family.name == VERSION and sample.value == 1:
                version = labels.get("version")
    return MetricsSample(
        region=region, reachable=True, at=at, requests=requests, errors=errors, buckets=buckets, version=version
    )


class HttpMetricsSource:
    """Reads ``{base_url}/metrics`` over HTTP.  Never raises: an unreadable app is a sample too."""

    def __init__(self, client: httpx.Client | None = None, clock: Callable[[], float] = time.monotonic):
        self.client = client or httpx.Client(timeout=3)
        self.clock = clock

    def sample(self, region: str, base_url: str) -> MetricsSample:
        """One reading of the region's app counters."""
        at = self.clock()
        try:
            resp = self.client.get(base_url.rstrip("/") + "/metrics")
            resp.raise_for_status()
            return parse_metrics(region, resp.text, at)
        except (httpx.HTTPError, ValueError) as exc:
            return MetricsSample(region=region, reachable=False, at=at, error=f"{type(exc).__name__}: {exc}")


def metrics_source_for(topology: Topology) -> MetricsSource:
    """Where the topology's app metrics are read (each app's /metrics today)."""
    return HttpMetricsSource()


def request_rate(before: MetricsSample, after: MetricsSample) -> float | None:
    """Requests per second between two readings (None when either is unreadable or no time passed)."""
    if not (before.reachable and after.reachable) or after.at <= before.at:
        return None
    served = after.requests - before.requests if after.requests >= before.requests else after.requests
    rate = served / (after.at - before.at)
    return rate if math.isfinite(rate) else None
