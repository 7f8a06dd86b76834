"""What probes of the regions' other parts saw: an app's /health, a bucket, a DNS record.

Plain data, no driver: the drivers (:mod:`regionops.drivers.probes`, ``objectstore``,
``traffic``) produce these, region health (:mod:`regionops.health`) judges them.
"""

from __future__ import annotations

from pydantic import BaseModel


class AppProbe(BaseModel):
    """What one probe of an app's /health endpoint saw."""

    region: str
    url: str
    reachable: bool
    status_code: int | None = None
    status: str | None = None
    version: str | None = None
    database: str | None = None
    error: str | None = None
    latency_ms: float | None = None

    @property
    def healthy(self) -> bool:
        return self.reachable and self.status_code == 200 and self.status == "ok"

    def sentence(self) -> str:
        """One line for logs and reports."""
        if not self.reachable:
            return f"app {self.region} is unreachable at {self.url} ({self.error})"
        if self.status_code != 200:
            return f"app {self.region} answered HTTP {self.status_code} ({self.error or self.status})"
        return f"app {self.region} is {self.status}, version {self.version}, database {self.database}"


class BucketStatus(BaseModel):
    """Whether a bucket answers, and in which region it lives."""

    bucket: str
    reachable: bool
    region: str | None = None
    error: str | None = None

    def sentence(self) -> str:
        """One line for logs and reports."""
        if not self.reachable:
            return f"bucket {self.bucket} is unreachable ({self.error})"
        return f"bucket {self.bucket} in {self.region} is reachable"


class DnsRecord(BaseModel):
    """One record set.  ``ttl`` is None for alias records."""

    name: str
    type: str
    ttl: int | None
    values: list[str]

    def sentence(self) -> str:
        """One line for logs and reports."""
        return f"{self.name} {self.type} -> {', '.join(self.values)} (ttl {self.ttl})"
