"""Prometheus' configuration generated from the topology: scrape targets and threshold rules.

Every target carries the labels the alert rules and the alert receiver rely on:
postgres_exporter targets ``{cluster, node, region}``, app targets ``{region}``.  The
thresholds the topology decides (replica lag per cluster, app error ratio and latency,
backup age, slot retention) become recording rules, ``regionops:threshold_*``, that the
static alert rules compare against, so one rules file serves every environment.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from regionops.errors import ConfigurationError
from regionops.topology import Topology

POSTGRES_JOB = "postgres"
APP_JOB = "app"
PUSHGATEWAY_JOB = "pushgateway"
THRESHOLD_GROUP = "regionops-thresholds"


def _seconds(value: float) -> str:
    """A Prometheus duration: whole seconds as ``15s``, fractions as ``500ms``, zero as ``0s``."""
    if value == 0:
        return "0s"
    if value >= 1 and float(value).is_integer():
        return f"{int(value)}s"
    return f"{max(1, round(value * 1000))}ms"


def _host_port(url: str, what: str) -> tuple[str, str, str]:
    """(scheme, host:port, path) of a base URL, with the scheme's default port filled in."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{what}: {url!r} is not an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, f"{parts.hostname}:{port}", parts.path.rstrip("/")


def postgres_targets(topology: Topology) -> list[dict[str, Any]]:
    """One static target group per node: its postgres_exporter, labelled cluster/node/region."""
    groups = []
    for cluster_name, cluster in topology.clusters.items():
        for node_name, node in cluster.nodes.items():
            port = node.exporter_port or topology.monitoring.exporter_port
            groups.append(
                {
                    "targets": [f"{node.host}:{port}"],
                    "labels": {"cluster": cluster_name, "node": node_name, "region": node.region},
                }
            )
    return groups


def app_scrape_jobs(topology: Topology) -> list[dict[str, Any]]:
    """Scrape jobs for the regional apps' ``/metrics`` (one job per scheme and path prefix)."""
    jobs: dict[tuple[str, str], dict[str, Any]] = {}
    for region_name, region in topology.regions.items():
        scheme, address, path = _host_port(region.app_url, f"regions.{region_name}.app_url")
        job = jobs.setdefault(
            (scheme, path),
            {
                "job_name": APP_JOB if not jobs else f"{APP_JOB}-{len(jobs) + 1}",
                "scheme": scheme,
                "metrics_path": f"{path}/metrics",
                "static_configs": [],
            },
        )
        job["static_configs"].append({"targets": [address], "labels": {"region": region_name}})
    return list(jobs.values())


def prometheus_config(
    topology: Topology,
    rule_files: Sequence[str],
    *,
    scrape_interval: float | None = None,
    evaluation_interval: float | None = None,
) -> dict[str, Any]:
    """The whole ``prometheus.yml`` for ``topology`` as a mapping.

    ``rule_files`` are written as given (relative paths resolve against the config
    file's directory).  Intervals default to the topology's scrape interval.
    """
    mon = topology.monitoring
    interval = _seconds(scrape_interval or mon.scrape_interval_seconds)
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": _seconds(min(10.0, (scrape_interval or mon.scrape_interval_seconds))),
            "evaluation_interval": _seconds(evaluation_interval or scrape_interval or mon.scrape_interval_seconds),
            # Which environment an alert comes from, should several share an Alertmanager.
            "external_labels": {"environment": topology.name},
        },
        "rule_files": list(rule_files),
        "scrape_configs": [
            {"job_name": POSTGRES_JOB, "static_configs": postgres_targets(topology)},
            *app_scrape_jobs(topology),
        ],
    }
    if mon.pushgateway_url:
        scheme, address, path = _host_port(mon.pushgateway_url, "monitoring.pushgateway_url")
        # honor_labels: the pushed `cluster` (and job) labels are the runbooks' own.
        config["scrape_configs"].append(
            {
                "job_name": PUSHGATEWAY_JOB,
                "honor_labels": True,
                "scheme": scheme,
                "metrics_path": f"{path}/metrics",
                "static_configs": [{"targets": [address]}],
            }
        )
    if mon.alertmanager_url:
        scheme, address, path = _host_port(mon.alertmanager_url, "monitoring.alertmanager_url")
        am: dict[str, Any] = {"scheme": scheme, "static_configs": [{"targets": [address]}]}
        if path:
            am["path_prefix"] = path
        config["alerting"] = {"alertmanagers": [am]}
    return config


def threshold_rules(topology: Topology) -> dict[str, Any]:
    """Recording rules holding the topology's thresholds, one series per cluster or region."""
    rules: list[dict[str, Any]] = []

    def constant(name: str, value: float, **labels: str) -> None:
        rules.append({"record": f"regionops:threshold_{name}", "expr": f"vector({value:g})", "labels": labels})

    t = topology.monitoring.thresholds
    for cluster_name, cluster in topology.clusters.items():
        constant("replica_lag_bytes", cluster.health.max_lag_bytes, cluster=cluster_name)
        constant("replica_lag_seconds", cluster.health.max_lag_seconds, cluster=cluster_name)
        constant("slot_retained_bytes", t.slot_retained_bytes, cluster=cluster_name)
        constant("backup_max_age_seconds", t.backup_max_age_hours * 3600, cluster=cluster_name)
    for region_name in topology.regions:
        constant("app_error_ratio", t.app_error_ratio, region=region_name)
        constant("app_p95_seconds", t.app_p95_seconds, region=region_name)
    return {"groups": [{"name": THRESHOLD_GROUP, "rules": rules}]}


_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$")


def parse_duration(text: str) -> float:
    """Seconds in a simple Prometheus duration (``1h``, ``2m``, ``30s``, ``1m30s``, ``500ms``)."""
    match = _DURATION.match(str(text))
    if not match or not any(match.groups()):
        raise ConfigurationError(f"not a Prometheus duration this tool understands: {text!r}")
    h, m, s, ms = (int(g or 0) for g in match.groups())
    return h * 3600 + m * 60 + s + ms / 1000


def cap_for(rules_doc: dict[str, Any], max_seconds: float) -> dict[str, Any]:
    """A copy of a rules file whose alerts wait at most ``max_seconds`` (``for``) before firing.

    The lab's short intervals: the shipped rules keep production's patience, the lab's
    copy fires within seconds.  A rule's ``min_for`` annotation bounds the cut: the
    primary-unreachable alert keeps 5 s, so a 3 s stall fires nothing in the lab either.
    """
    doc = copy.deepcopy(rules_doc)
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            if "alert" not in rule or "for" not in rule:
                continue
            floor = (rule.get("annotations") or {}).get("min_for")
            limit = max(max_seconds, parse_duration(floor)) if floor else max_seconds
            if parse_duration(rule["for"]) > limit:
                rule["for"] = _seconds(limit)
    return doc
