"""Monitoring tasks: silence planned work's alerts, lift the silence, publish runbook results."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from regionops.drivers.alertmanager import alertmanager_for
from regionops.drivers.prometheus import PrometheusClient, PrometheusView
from regionops.drivers.pushgateway import Gauge, Pushed, PushgatewayClient
from regionops.monitoring import silences
from regionops.topology import Topology
from tasks.common import TRANSIENT_RETRIES


@task(name="silence planned work's alerts", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def silence_alerts(
    topology: Topology, cluster: str, runbook: str, run: str, duration_seconds: float
) -> silences.PlannedSilence:
    """Silence the cluster's HA alerts in Alertmanager for the work's duration."""
    return silences.silence(alertmanager_for(topology), topology, cluster, runbook, run, duration_seconds)


@task(name="lift the silence", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def lift_silence(
    topology: Topology, planned: silences.PlannedSilence, settle_seconds: float, timeout_seconds: float
) -> silences.SilenceLifted:
    """Expire the silence once the alerts the work caused have resolved (or the timeout passed)."""
    return silences.lift(alertmanager_for(topology), planned, settle_seconds, timeout_seconds)


@task(name="publish result metrics", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def publish_metrics(topology: Topology, job: str, cluster: str, gauges: list[Gauge]) -> Pushed:
    """Push a runbook's result gauges to the Pushgateway (group job + cluster)."""
    assert topology.monitoring.pushgateway_url
    return PushgatewayClient(topology.monitoring.pushgateway_url).push(job, cluster, gauges)


@task(name="read Prometheus alerts", cache_policy=NO_CACHE)
def read_prometheus_alerts(topology: Topology) -> PrometheusView:
    """The alerts Prometheus holds now (unreachable is a result, not an error)."""
    assert topology.monitoring.prometheus_url
    return PrometheusClient(topology.monitoring.prometheus_url).alerts()
