"""Prometheus metrics of the lab's regional app (``GET /metrics``), with prometheus_client.

The names are the contract between the app, the monitoring rules
(``deployments/monitoring/``) and the release runbook's health gates:

- ``regionops_app_requests_total{region, method, endpoint, code}``: every request served;
  errors are the ones with ``code=~"5.."``.
- ``regionops_app_request_duration_seconds{region, endpoint}``: latency histogram (p95 from
  ``histogram_quantile``).
- ``regionops_app_version_info{region, version}``: 1 for the version being served.

Each app process has its own registry, so tests can run several apps in one process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Latency buckets for a small web app: 5 ms .. 10 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
KNOWN_ENDPOINTS = frozenset({"/health", "/version", "/write", "/read", "/metrics"})


class AppMetrics:
    """The metrics of one regional app."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, region: str):
        self.region = region
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "regionops_app_requests",
            "Requests served by the regional app",
            ["region", "method", "endpoint", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "regionops_app_request_duration_seconds",
            "Time to serve a request",
            ["region", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.version_info = Gauge(
            "regionops_app_version_info",
            "The application version this process serves (value 1)",
            ["region", "version"],
            registry=self.registry,
        )
        self._version: str | None = None

    def observe(self, method: str, path: str, code: int, seconds: float) -> None:
        """Count one request; unknown paths share one label so scanners cannot explode the series."""
        endpoint = path if path in KNOWN_ENDPOINTS else "other"
        self.requests.labels(self.region, method, endpoint, str(code)).inc()
        self.latency.labels(self.region, endpoint).observe(seconds)

    def set_version(self, version: str) -> None:
        """Record the version served now (the previous version's series is removed)."""
        if version == self._version:
            return
        if self._version is not None:
            self.version_info.remove(self.region, self._version)
        self.version_info.labels(self.region, version).set(1)
        self._version = version

    def render(self) -> bytes:
        """The exposition text for ``GET /metrics``."""
        return generate_latest(self.registry)
