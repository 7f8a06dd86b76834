"""The environment as data: regions, clusters, nodes, buckets, DNS, objectives, residency.

One YAML file describes an environment (the lab writes its own; production has its
own file).  :func:`load_topology` validates the whole file and reports *every*
problem at once, each naming the field: ``clusters.core.nodes.us-1.region: unknown
region 'usa'``.  Residency is checked here (a node or a backup copy target outside
the cluster's residency is rejected) and again by the runbooks before moving data.

The settings of the services around the clusters (:mod:`regionops.topology_services`)
and of the application (:mod:`regionops.topology_app`) live beside this module on the
building blocks of :mod:`regionops.topology_base`; import every topology name from here.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from regionops.errors import ConfigurationError, TopologyError
from regionops.topology_app import Application
from regionops.topology_app import AppTraffic as AppTraffic  # re-exported: part of the topology's API
from regionops.topology_base import Name, SecretRef, Strict
from regionops.topology_services import (
    AlertingSettings,
    AwsSettings,
    DrillSettings,
    Monitoring,
    Notifications,
    QuorumSettings,
)

GLOBAL_RESIDENCY = "global"


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
    netns: str | None = Field(
        None,
        description="the network namespace that stands for the node's host (the lab's WAN regions); "
        "its server is started inside it",
    )
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
        "(every node's data directory is reachable there), 'regional' on the executor of the node's "
        "region (regionops executor --region R, a Prefect task worker on that region's hosts)",
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


class PrefectSettings(Strict):
    ui_url: str | None = Field(None, description="base URL of the Prefect UI, for links in reports")
    node_pickup_seconds: float = Field(
        120,
        gt=0,
        description="how long a node step may wait for its region's executor to pick it up before the "
        "runbook stops (regional node operator): a gone executor is an error, not a hang",
    )

    def run_link(self, run_id: object, kind: Literal["flow-run", "task-run"] = "flow-run") -> str | None:
        """The one builder of a (flow or task) run's link in the Prefect UI (None when no UI is named)."""
        return f"{self.ui_url.rstrip('/')}/runs/{kind}/{run_id}" if self.ui_url else None


class Topology(Strict):
    """A whole environment."""

    name: Name
    regions: dict[Name, Region]
    clusters: dict[Name, Cluster]
    traffic: Traffic
    notifications: Notifications = Notifications()
    aws: AwsSettings = AwsSettings()
    quorum: QuorumSettings | None = Field(
        None, description="the etcd quorum store (fences, locks, the writer's term); runbooks that fence need it"
    )
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

    if topo.quorum is not None:
        for name in sorted(set(topo.quorum.endpoints) - set(topo.regions)):
            problems.append(f"quorum.endpoints: unknown region {name!r} (regions: {', '.join(sorted(topo.regions))})")

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
    regional: list[tuple[str, Mapping[str, object]]] = [("application.assets.buckets", app.assets.buckets)]
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


# Every runbook run parses the topology file at its start: libyaml's safe loader does it in
# a sixth of the pure-Python one's time (2 ms against 14 ms on the lab's file).
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_topology(path: str | os.PathLike[str] | None = None) -> Topology:
    """Load and validate a topology file: ``path``, else ``$REGIONOPS_TOPOLOGY``, else the lab's."""
    resolved = Path(path or os.environ.get("REGIONOPS_TOPOLOGY") or default_lab_topology_path())
    try:
        text = resolved.read_text()
    except FileNotFoundError:
        hint = " (start the lab with `regionops lab up`, or pass --topology)" if path is None else ""
        raise ConfigurationError(f"topology file {resolved} does not exist{hint}") from None
    try:
        data = yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader, libyaml's when present
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
