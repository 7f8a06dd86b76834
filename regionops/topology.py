"""The environment as data: regions, clusters, nodes, buckets, DNS, objectives, residency.

One YAML file describes an environment (the lab writes its own; production has its
own file).  :func:`load_topology` validates the whole file and reports *every*
problem at once, each naming the field: ``clusters.core.nodes.us-1.region: unknown
region 'usa'``.  Residency is checked here (a node or a backup copy target outside
the cluster's residency is rejected) and again by the runbooks before moving data.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from regionops.errors import ConfigurationError, TopologyError

GLOBAL_RESIDENCY = "global"
NAME_PATTERN = r"^[a-z][a-z0-9-]*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class Strict(BaseModel):
    """Base for topology models: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(Strict):
    """Where a secret lives.  Exactly one of the sources; the value never enters the file."""

    env: str | None = Field(None, description="environment variable holding the secret")
    prefect_secret: str | None = Field(None, description="name of a Prefect Secret block")
    file: str | None = Field(None, description="file holding the secret (mounted secret)")

    def model_post_init(self, __context: Any) -> None:
        given = [k for k in ("env", "prefect_secret", "file") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("a secret reference needs exactly one of env, prefect_secret, file")

    def describe(self) -> str:
        """Where the secret is read from, safe to log."""
        if self.env:
            return f"env:{self.env}"
        if self.prefect_secret:
            return f"prefect-secret:{self.prefect_secret}"
        return f"file:{self.file}"

    def resolve(self) -> str:
        """Read the secret's value.  Raises ConfigurationError naming the source if missing."""
        if self.env:
            value = os.environ.get(self.env)
            if not value:
                raise ConfigurationError(f"secret {self.describe()} is not set")
            return value
        if self.file:
            try:
                return Path(self.file).read_text().strip()
            except OSError as exc:
                raise ConfigurationError(f"secret {self.describe()} cannot be read: {exc.strerror}") from exc
        from prefect.blocks.system import Secret  # only here: Prefect is optional below flows

        try:
            return Secret.load(self.prefect_secret).get()
        except Exception as exc:  # noqa: BLE001 - any failure to load is a config problem
            raise ConfigurationError(f"secret {self.describe()} cannot be loaded: {exc}") from exc


class Region(Strict):
    """One application region: where it is, which zone its data may live in, its services."""

    aws_region: str = Field(description="AWS region name, e.g. eu-west-1")
    residency: Name = Field(description="data-residency zone this region belongs to, e.g. eu")
    app_url: str = Field(description="base URL of this region's application")
    bucket: str = Field(description="S3 bucket of this region (backups)")
    work_pool: str = Field(description="Prefect work pool whose worker runs in this region")


class Node(Strict):
    """One PostgreSQL server of a cluster."""

    region: str
    host: str
    port: int = Field(ge=1, le=65535)
    data_dir: str = Field(description="data directory on the node's machine")
    priority: int = Field(100, description="higher wins among equally advanced promotion candidates")
    dns_name: str | None = Field(None, description="the node's DNS name; default <node>.<cluster>.<zone>")
    exporter_port: int | None = Field(
        None, ge=1, le=65535, description="port of this node's postgres_exporter; default monitoring.exporter_port"
    )


class Objectives(Strict):
    """Recovery objectives the drills and reports measure against."""

    rto_seconds: float = Field(60, gt=0)
    rpo_seconds: float = Field(5, ge=0)


class HealthThresholds(Strict):
    """When region health calls a replica lagging."""

    max_lag_bytes: int = Field(16 * 1024 * 1024, ge=0)
    max_lag_seconds: float = Field(30, ge=0)


class Retention(Strict):
    """Backup retention: keep the last N and/or everything younger than D days."""

    keep_last: int | None = Field(7, ge=1)
    max_age_days: float | None = Field(14, gt=0)


class PgBackRestSettings(Strict):
    """How pgBackRest backs a cluster up: one stanza (named after the cluster), one repository per allowed bucket.

    Paths are on each node's machine; the lab puts them under its own directory.
    Secrets are references (``{env: ...}``, ``{prefect_secret: ...}``, ``{file: ...}``):
    their values go only into the node's 0600 configuration file.
    """

    repo_path: str = Field("/pgbackrest", description="path of the repository inside each bucket")
    cipher_passphrase: SecretRef | None = Field(
        None, description="repository encryption passphrase (aes-256-cbc); none: repositories are not encrypted"
    )
    retention_full: int = Field(2, ge=1, description="full backups kept in each repository")
    retention_diff: int = Field(7, ge=1, description="differential backups kept in each repository")
    copy_retention_full: int | None = Field(
        None, ge=1, description="full backups kept in copy repositories; default retention_full"
    )
    compress_type: Literal["lz4", "zst", "gz", "bz2", "none"] = "lz4"
    process_max: int = Field(2, ge=1, le=64, description="parallel processes for backup, restore, archive-push")
    bundle: bool = Field(True, description="pack small files into few objects (repo-bundle)")
    archive_async: bool = Field(True, description="asynchronous WAL archive-push (needs spool_dir)")
    config_dir: str = Field("/etc/pgbackrest", description="directory of the per-node configuration files")
    spool_dir: str = Field("/var/spool/pgbackrest", description="asynchronous archiving queue")
    lock_dir: str = Field("/tmp/pgbackrest", description="pgBackRest's lock files")
    log_dir: str = Field("/var/log/pgbackrest", description="pgBackRest's log files")
    socket_dir: str = Field("/var/run/postgresql", description="unix socket directory of the nodes (pg1-socket-path)")


class BackupPolicy(Strict):
    """How a cluster is backed up."""

    retention: Retention = Retention()
    pgbackrest: PgBackRestSettings = PgBackRestSettings()
    copy_to: list[str] = Field(default_factory=list, description="regions whose bucket gets a copy")
    fingerprint_tables: list[str] = Field(
        default_factory=list, description="tables whose row count and checksum prove a restore"
    )


class Cluster(Strict):
    """A PostgreSQL cluster: one primary, streaming replicas, possibly across regions."""

    residency: list[Name] = Field(
        default_factory=lambda: [GLOBAL_RESIDENCY],
        description="zones its data may live in; 'global' allows every zone",
    )
    database: str = "app"
    user: str = "postgres"
    password: SecretRef | None = None
    replication_user: str = "postgres"
    os_user: str | None = Field(None, description="OS user that owns data directories and runs pg tools")
    nodes: dict[Name, Node]
    writer_record: str = Field(description="DNS name that points at the primary")
    objectives: Objectives = Objectives()
    health: HealthThresholds = HealthThresholds()
    backup: BackupPolicy = BackupPolicy()
    node_operator: Literal["local", "regional"] = Field(
        "local",
        description="where node steps (pg_ctl, data directory) run: 'local' on the machine running the runbook "
        "(every node's data directory is reachable there), 'regional' as runs of the "
        "node-operation deployment on the node's region's work pool",
    )

    @field_validator("residency", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("nodes")
    @classmethod
    def _at_least_one(cls, value: dict[str, Node]) -> dict[str, Node]:
        if not value:
            raise ValueError("a cluster needs at least one node")
        return value

    def allows_zone(self, zone: str) -> bool:
        """Whether data of this cluster may live in residency zone ``zone``."""
        return GLOBAL_RESIDENCY in self.residency or zone in self.residency


class Traffic(Strict):
    """DNS: the Route53 hosted zone holding the writer records."""

    route53_zone: str = Field(description="hosted zone name, e.g. db.example.com.")
    record_ttl: int = Field(30, ge=0)


class SlackSettings(Strict):
    """Where run reports go in Slack."""

    channel: str
    token: SecretRef
    base_url: str | None = Field(None, description="Web API base URL; default Slack's own")


class Notifications(Strict):
    slack: SlackSettings | None = None


class AwsSettings(Strict):
    """How to reach AWS.  ``endpoint_url`` is for S3/Route53 compatible servers (the lab)."""

    endpoint_url: str | None = None
    access_key_id: SecretRef | None = None
    secret_access_key: SecretRef | None = None
    ca_bundle: str | None = Field(
        None, description="CA certificate file (PEM) that S3/Route53 clients and pgBackRest trust; default the system's"
    )


FAULT_NAMES = ("primary-crash", "region-outage", "primary-freeze", "replica-loss", "planned-switchover")


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


class PrefectSettings(Strict):
    ui_url: str | None = Field(None, description="base URL of the Prefect UI, for links in reports")
    node_pickup_seconds: float = Field(
        120,
        gt=0,
        description="how long a node step may wait for its region's worker to pick it up before the "
        "runbook stops (regional node operator): a gone worker is an error, not a hang",
    )

    def run_link(self, run_id: object) -> str | None:
        """The one builder of a flow run's link in the Prefect UI (None when no UI is named)."""
        return f"{self.ui_url.rstrip('/')}/runs/flow-run/{run_id}" if self.ui_url else None


class CommandTargetSettings(Strict):
    """Release by running a command per region (``kubectl set image``, ``helm upgrade``, a deploy script).

    Placeholders, each shell-quoted when substituted: ``{region}``, ``{aws_region}``,
    ``{version}``, ``{application}``.
    """

    deploy: str = Field(description="command that deploys {version} to {region}")
    current_version: str | None = Field(
        None, description="command that prints the version running in {region}; default: the app's /version"
    )
    timeout_seconds: float = Field(600, gt=0, description="a deploy command running longer is killed")


class EcsTargetSettings(Strict):
    """Release to an ECS service per region: a new task definition revision with the version's image."""

    cluster: str = Field(description="ECS cluster name; may use {region}")
    service: str = Field(description="ECS service name; may use {region}")
    container: str = Field(description="container (in the task definition) whose image carries the version")
    image: str = Field(description="image reference with {version}, e.g. registry/app:{version}")
    stable_timeout_seconds: float = Field(900, gt=0, description="how long a service may take to become stable")


class ReleaseSettings(Strict):
    """How the application is released: which target, and its settings."""

    target: Literal["lab", "command", "ecs"] = Field("lab", description="release target kind")
    lab_dir: str | None = Field(None, description="lab target: the lab's directory")
    command: CommandTargetSettings | None = None
    ecs: EcsTargetSettings | None = None
    canary_region: str | None = Field(None, description="first wave of a release; default the first region")
    probe_paths: list[str] = Field(
        default_factory=lambda: ["/health"],
        description="paths each health probe requests (their answers feed the error-rate gate)",
    )


class AssetSettings(Strict):
    """Static assets: published to every region's bucket, fronted by a CDN."""

    source: str | None = Field(
        None, description="directory holding a version's assets, with {version}; none: no static assets"
    )
    prefix: str = Field("static/", description="key prefix in each bucket")
    buckets: dict[str, str] = Field(
        default_factory=dict, description="region -> assets bucket; default the region's bucket"
    )
    cache_control: str = Field("public, max-age=300", description="Cache-Control of every published object")
    cdn_distribution: str | None = Field(
        None, description="CloudFront distribution id (or its comment) whose changed paths are invalidated"
    )


class AppTraffic(Strict):
    """Geographic routing of the application: one latency-based record per region, each health-checked."""

    record: str = Field(description="the application's DNS name (latency records, one per region)")
    health_check_path: str = Field("/health", description="path Route53's health checks request")
    capacity_rps: dict[str, float] = Field(
        default_factory=dict, description="region -> requests/s it can serve (drain checks the others can)"
    )
    drain_on_database_loss: bool = Field(
        False, description="failover and DR drill drain the app traffic of a region whose database is lost"
    )


class Application(Strict):
    """The application the regions run: how it is released, its static assets, its traffic."""

    name: Name = "app"
    release: ReleaseSettings = ReleaseSettings()
    assets: AssetSettings = AssetSettings()
    traffic: AppTraffic | None = None


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
    scrape_interval_seconds: float = Field(15, gt=0)
    max_alert_for_seconds: float | None = Field(
        None, gt=0, description="cap on every alert rule's `for` (the lab uses a few seconds)"
    )
    thresholds: AlertThresholds = AlertThresholds()


class Topology(Strict):
    """A whole environment."""

    name: Name
    regions: dict[Name, Region]
    clusters: dict[Name, Cluster]
    traffic: Traffic
    notifications: Notifications = Notifications()
    aws: AwsSettings = AwsSettings()
    prefect: PrefectSettings = PrefectSettings()
    drills: DrillSettings = DrillSettings()
    alerting: AlertingSettings | None = None
    monitoring: Monitoring = Monitoring()
    state_dir: str | None = Field(None, description="where runbooks keep local state (locks, scratch)")
    application: Application | None = Field(None, description="the application: release, assets, traffic")

    # -- look-ups used everywhere -------------------------------------------------
    def cluster(self, name: str | None = None) -> tuple[str, Cluster]:
        """The named cluster, or the only one when ``name`` is None."""
        if name is None:
            if len(self.clusters) == 1:
                return next(iter(self.clusters.items()))
            raise ConfigurationError(
                f"topology {self.name} has {len(self.clusters)} clusters; name one of: "
                + ", ".join(sorted(self.clusters))
            )
        if name not in self.clusters:
            raise ConfigurationError(
                f"unknown cluster {name!r}; topology {self.name} has: {', '.join(sorted(self.clusters))}"
            )
        return name, self.clusters[name]

    def node(self, cluster: str, node: str) -> Node:
        """A node of a cluster, with an error naming both when absent."""
        _, c = self.cluster(cluster)
        if node not in c.nodes:
            raise ConfigurationError(f"cluster {cluster} has no node {node!r}; it has: {', '.join(sorted(c.nodes))}")
        return c.nodes[node]

    def node_dns_name(self, cluster: str, node: str) -> str:
        """The DNS name the writer record points at when ``node`` is primary."""
        n = self.node(cluster, node)
        return fqdn(n.dns_name or f"{node}.{cluster}.{self.traffic.route53_zone}")

    def node_for_dns_name(self, cluster: str, name: str) -> str | None:
        """Which node a DNS name (a writer record's target) designates, if any."""
        target = fqdn(name)
        for node_name in self.clusters[cluster].nodes:
            if self.node_dns_name(cluster, node_name) == target:
                return node_name
        return None

    def app(self) -> Application:
        """The application section, or a ConfigurationError saying the topology has none."""
        if self.application is None:
            raise ConfigurationError(f"topology {self.name} has no application section (release, assets, traffic)")
        return self.application

    def assets_bucket(self, region: str) -> str:
        """The bucket a region's static assets go to (default: the region's bucket)."""
        return self.app().assets.buckets.get(region) or self.regions[region].bucket

    def writer_record(self, cluster: str) -> str:
        """The cluster's writer record as a fully qualified name."""
        return fqdn(self.clusters[cluster].writer_record)


def fqdn(name: str) -> str:
    """``name`` with exactly one trailing dot, lower-cased (Route53's form)."""
    return name.rstrip(".").lower() + "."


def _check_references(topo: Topology) -> list[str]:
    """Cross-field rules pydantic cannot express per field.  Returns every problem."""
    problems: list[str] = []
    zones = {r.residency for r in topo.regions.values()}
    buckets = Counter(r.bucket for r in topo.regions.values())
    for bucket, count in buckets.items():
        if count > 1:
            problems.append(f"regions: bucket {bucket!r} is used by {count} regions")

    endpoints: Counter[tuple[str, int]] = Counter()
    for cname, cluster in topo.clusters.items():
        for zone in cluster.residency:
            if zone != GLOBAL_RESIDENCY and zone not in zones:
                problems.append(
                    f"clusters.{cname}.residency: unknown residency zone {zone!r} "
                    f"(regions define: {', '.join(sorted(zones))})"
                )
        for nname, node in cluster.nodes.items():
            where = f"clusters.{cname}.nodes.{nname}"
            endpoints[(node.host, node.port)] += 1
            region = topo.regions.get(node.region)
            if region is None:
                problems.append(f"{where}.region: unknown region {node.region!r}")
            elif not cluster.allows_zone(region.residency):
                problems.append(
                    f"{where}.region: region {node.region!r} is in residency zone "
                    f"{region.residency!r}, which cluster {cname} (residency "
                    f"{', '.join(cluster.residency)}) forbids"
                )
        # Two nodes on one host with one data directory would be one directory.
        dirs = Counter((node.host, node.data_dir) for node in cluster.nodes.values())
        for (host, path), count in dirs.items():
            if count > 1:
                problems.append(f"clusters.{cname}.nodes: {count} nodes on host {host} share data_dir {path!r}")
        for i, target in enumerate(cluster.backup.copy_to):
            where = f"clusters.{cname}.backup.copy_to[{i}]"
            region = topo.regions.get(target)
            if region is None:
                problems.append(f"{where}: unknown region {target!r}")
            elif not cluster.allows_zone(region.residency):
                problems.append(
                    f"{where}: copying backups to region {target!r} (residency zone "
                    f"{region.residency!r}) would break cluster {cname}'s residency "
                    f"({', '.join(cluster.residency)})"
                )
        if not fqdn(cluster.writer_record).endswith("." + fqdn(topo.traffic.route53_zone)):
            problems.append(
                f"clusters.{cname}.writer_record: {cluster.writer_record!r} is not inside "
                f"zone {topo.traffic.route53_zone!r}"
            )
    problems += _check_application(topo)
    for (host, port), count in endpoints.items():
        if count > 1:
            users = [
                f"{c}.{n}"
                for c, cl in topo.clusters.items()
                for n, node in cl.nodes.items()
                if (node.host, node.port) == (host, port)
            ]
            problems.append(f"clusters: duplicate port {port} on host {host} (nodes {', '.join(users)})")
    return problems


def _check_application(topo: Topology) -> list[str]:
    """The application section names only known regions, and each target has its settings."""
    app = topo.application
    if app is None:
        return []
    problems = []
    rel = app.release
    if rel.canary_region and rel.canary_region not in topo.regions:
        problems.append(f"application.release.canary_region: unknown region {rel.canary_region!r}")
    for kind in ("command", "ecs"):
        if rel.target == kind and getattr(rel, kind) is None:
            problems.append(f"application.release.{kind}: required when target is {kind!r}")
    if rel.target == "lab" and not rel.lab_dir:
        problems.append("application.release.lab_dir: required when target is 'lab'")
    regional = [("application.assets.buckets", app.assets.buckets)]
    if app.traffic:
        regional.append(("application.traffic.capacity_rps", app.traffic.capacity_rps))
        if not fqdn(app.traffic.record).endswith("." + fqdn(topo.traffic.route53_zone)):
            problems.append(
                f"application.traffic.record: {app.traffic.record!r} is not inside zone {topo.traffic.route53_zone!r}"
            )
    for where, mapping in regional:
        problems += [f"{where}.{r}: unknown region {r!r}" for r in mapping if r not in topo.regions]
    return problems


def _describe_pydantic_errors(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        kind = err["type"]
        if kind == "missing":
            problems.append(f"{where}: required field is missing")
        elif kind == "extra_forbidden":
            problems.append(f"{where}: unknown field")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {msg} (got {err.get('input')!r})")
    return problems


def parse_topology(data: Any, source: str = "<data>") -> Topology:
    """Validate a topology already parsed from YAML/JSON.  Raises TopologyError."""
    if not isinstance(data, dict):
        raise TopologyError(source, ["(top level): expected a mapping"])
    try:
        topo = Topology.model_validate(data)
    except ValidationError as exc:
        raise TopologyError(source, _describe_pydantic_errors(exc)) from None
    problems = _check_references(topo)
    if problems:
        raise TopologyError(source, problems)
    return topo


def load_topology(path: str | os.PathLike[str] | None = None) -> Topology:
    """Load and validate a topology file: ``path``, else ``$REGIONOPS_TOPOLOGY``, else the lab's."""
    resolved = Path(path or os.environ.get("REGIONOPS_TOPOLOGY") or default_lab_topology_path())
    try:
        text = resolved.read_text()
    except FileNotFoundError:
        hint = " (start the lab with `regionops lab up`, or pass --topology)" if path is None else ""
        raise ConfigurationError(f"topology file {resolved} does not exist{hint}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TopologyError(str(resolved), [f"(file): not valid YAML: {exc}"]) from None
    return parse_topology(data, str(resolved))


def default_lab_dir() -> Path:
    """The lab's state directory: ``$REGIONOPS_LAB_DIR`` or ``.lab`` in the working directory."""
    return Path(os.environ.get("REGIONOPS_LAB_DIR") or ".lab").absolute()


def default_lab_topology_path() -> Path:
    """Where the lab writes its topology file."""
    return default_lab_dir() / "topology.yaml"


def home_region(cluster: Cluster) -> str:
    """The region whose bucket holds a cluster's backups and fences: that of its highest-priority node.

    The designated primary's region is stable across failovers, so backups and fences do
    not wander between buckets when the primary moves.
    """
    name = max(cluster.nodes.items(), key=lambda item: (item[1].priority, item[0]))[0]
    return cluster.nodes[name].region
