"""Plain data of a release, shared by drivers, decisions and flows (no I/O here)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class MetricsSample(BaseModel):
    """One reading of a regional app's counters (``GET /metrics``), ``/metrics`` itself excluded.

    ``buckets`` is the latency histogram's cumulative counts by upper bound in seconds
    (``le``), summed over endpoints; ``+Inf`` is ``float('inf')``.
    """

    region: str
    reachable: bool
    at: float = Field(0.0, description="monotonic clock of the reading")
    requests: float = 0
    errors: float = 0
    buckets: dict[float, float] = Field(default_factory=dict)
    version: str | None = None
    error: str | None = None

    def sentence(self) -> str:
        """One line for logs and reports."""
        if not self.reachable:
            return f"metrics of {self.region} unreadable: {self.error}"
        return f"{self.region}: {self.requests:g} requests, {self.errors:g} errors, version {self.version}"


class GateThresholds(BaseModel):
    """When a region is worse: more errors or slower answers than this, over the bake."""

    max_error_rate: float = Field(0.01, ge=0, le=1, description="largest share of 5xx answers")
    max_p95_ms: float = Field(250, gt=0, description="largest 95th percentile latency in milliseconds")
    min_requests: int = Field(1, ge=0, description="fewer requests measured than this: the gate cannot pass")


class GateMeasurement(BaseModel):
    """One gate check of one region: what was measured against which limits, and the verdict."""

    region: str
    wave: int
    check: str
    requests: float
    errors: float
    error_rate: float | None
    p95_ms: float | None
    passed: bool
    reason: str

    def sentence(self) -> str:
        """One line for logs and reports."""
        return f"wave {self.wave} {self.region} {self.check}: {'passed' if self.passed else 'FAILED'}: {self.reason}"

    def row(self) -> dict[str, object]:
        """A row of the report's gate table."""
        return {
            "wave": self.wave,
            "region": self.region,
            "check": self.check,
            "requests": int(self.requests),
            "errors": int(self.errors),
            "error rate": None if self.error_rate is None else f"{self.error_rate:.1%}",
            "p95 ms": None if self.p95_ms is None else round(self.p95_ms, 1),
            "verdict": "pass" if self.passed else "FAIL",
        }
