"""The topology's settings of the services around the clusters.

Notifications (Slack), AWS access, DR drill faults, the alert receiver and monitoring
(Prometheus, Alertmanager, Pushgateway).  Part of :class:`regionops.topology.Topology`;
import them from :mod:`regionops.topology`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from regionops.model.faults import FAULT_NAMES
from regionops.topology_base import SecretRef, Strict


class SlackSettings(Strict):
    """Where run reports go in Slack."""

    channel: str
    token: SecretRef
    base_url: str | None = Field(None, description="Web API base URL; default Slack's own")


class Notifications(Strict):
    slack: SlackSettings | None = None


class AwsSettings(Strict):
    """How to reach AWS.  ``endpoint_url`` is for S3/Route53 compatible servers (the lab).

    ``s3_endpoints`` names each region's own S3 endpoint: a bucket is reached only through
    its region's, so a lost region's buckets are unreachable from everywhere, as in AWS.
    """

    endpoint_url: str | None = None
    s3_endpoints: dict[str, str] = Field(
        default_factory=dict,
        description="S3 endpoint per AWS region (production: the regional endpoints); default endpoint_url",
    )
    access_key_id: SecretRef | None = None
    secret_access_key: SecretRef | None = None
    ca_bundle: str | None = Field(
        None, description="CA certificate file (PEM) that S3/Route53 clients and pgBackRest trust; default the system's"
    )

    def s3_endpoint(self, aws_region: str | None) -> str | None:
        """The S3 endpoint for buckets in ``aws_region``."""
        return self.s3_endpoints.get(aws_region or "", self.endpoint_url)


class QuorumSettings(Strict):
    """The quorum store: an etcd cluster with one member per region (any one region can be lost).

    Fences, cluster locks and the writer's term live here, never in one region's bucket:
    a write is acknowledged only by a majority of regions, so every region that can still
    reach the majority reads the same state.  ``endpoints`` maps each region to its own
    member's client URL; a runbook asks its own region's member first.
    """

    endpoints: dict[str, str] = Field(description="region -> its etcd member's client URL (http://host:2379)")
    prefix: str = Field("/regionops", description="the keys' common prefix (several environments can share etcd)")
    timeout_seconds: float = Field(2.0, gt=0, description="how long one member may take to answer before the next")

    @field_validator("endpoints")
    @classmethod
    def _three_sites(cls, endpoints: dict[str, str]) -> dict[str, str]:
        if len(endpoints) < 3:
            raise ValueError(
                f"a quorum needs members in at least three regions (two is not enough: losing either "
                f"loses the majority); got {len(endpoints)}: {', '.join(sorted(endpoints)) or 'none'}"
            )
        return endpoints

    def endpoints_from(self, region: str | None) -> list[str]:
        """Every member's URL, ``region``'s own first (the nearest answers fastest)."""
        own = [self.endpoints[region]] if region in self.endpoints else []
        return own + [url for r, url in sorted(self.endpoints.items()) if r != region]


class FaultSettings(Strict):
    """How a DR drill injects faults into this environment.

    ``lab`` acts on the local lab's processes and data directories.  ``command`` runs
    a templated command per fault (an SSM document, ``systemctl stop``, an FIS
    experiment start); placeholders: ``{cluster} {node} {region} {host} {port} {data_dir}``.
    """

    driver: Literal["lab", "command"] = "command"
    lab_dir: str | None = Field(None, description="the lab's state directory (driver lab)")
    commands: dict[str, str] = Field(default_factory=dict, description="fault name -> command template")
    heal_commands: dict[str, str] = Field(
        default_factory=dict, description="fault name -> command that undoes it (resume, restart an app)"
    )
    timeout_seconds: float = Field(60, gt=0, description="how long one fault command may run")

    @field_validator("commands", "heal_commands")
    @classmethod
    def _known_faults(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(FAULT_NAMES))
        if unknown:
            raise ValueError(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(FAULT_NAMES)}")
        return value


class DrillSettings(Strict):
    """Disaster-recovery drills of this environment."""

    faults: FaultSettings = FaultSettings()


class AlertingSettings(Strict):
    """Where Alertmanager's webhooks go: the alert receiver (the DR drill's alert path posts there too)."""

    receiver_url: str = Field(description="base URL of the alert receiver, e.g. https://alerts.example.com")
    token: SecretRef = Field(description="bearer token the receiver expects")


class AlertThresholds(Strict):
    """Thresholds of the alert rules that the topology (not the rules file) decides."""

    app_error_ratio: float = Field(0.05, gt=0, le=1, description="5xx share of an app's requests over 5 min")
    app_p95_seconds: float = Field(1.0, gt=0, description="p95 request latency of an app over 5 min")
    backup_max_age_hours: float = Field(26, gt=0, description="age of a cluster's newest successful backup")
    slot_retained_bytes: int = Field(1024**3, gt=0, description="WAL a replication slot may hold back on the primary")


class Monitoring(Strict):
    """Where Prometheus, Alertmanager and the Pushgateway of this environment live (all optional).

    ``regionops.monitoring`` generates Prometheus' scrape config and the threshold rules
    from this and the rest of the topology; runbooks use it to read Prometheus, publish
    their results and silence the alerts planned work causes.
    """

    prometheus_url: str | None = Field(None, description="Prometheus base URL (region health reads it)")
    alertmanager_url: str | None = Field(None, description="Alertmanager base URL (silences for planned work)")
    pushgateway_url: str | None = Field(None, description="Pushgateway base URL (backup and restore results)")
    alert_receiver_url: str | None = Field(None, description="the regionops alert receiver's POST /alerts URL")
    exporter_port: int = Field(9187, ge=1, le=65535, description="postgres_exporter port on each node's host")
    scrape_interval_seconds: float = Field(
        2, gt=0, description="Prometheus scrape and rule evaluation interval (2 s: a dead primary pages in seconds)"
    )
    max_alert_for_seconds: float | None = Field(
        None, gt=0, description="cap on every alert rule's `for` (the lab uses a few seconds)"
    )
    thresholds: AlertThresholds = AlertThresholds()
