"""Application traffic tasks: read the routing, measure load, drain or restore one region."""

from __future__ import annotations

import time

from prefect import task
from prefect.cache_policies import NO_CACHE

from regionops import routing
from regionops.drivers.appmetrics import metrics_source_for, request_rate
from regionops.topology import Topology
from tasks.common import TRANSIENT_RETRIES


@task(name="read app traffic", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def read_traffic(topology: Topology) -> routing.TrafficState:
    """Which regions the application's latency records send traffic to, and which are drained."""
    return routing.read_state(topology)


@task(name="measure load", cache_policy=NO_CACHE)
def measure_load(topology: Topology, region: str, window_seconds: float) -> float | None:
    """Requests per second the region's app served over ``window_seconds`` (None: metrics unreadable)."""
    source = metrics_source_for(topology)
    url = topology.regions[region].app_url
    first = source.sample(region, url)
    time.sleep(window_seconds)
    return request_rate(first, source.sample(region, url))


@task(name="drain region", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def drain_region(topology: Topology, region: str, reason: str) -> routing.TrafficChange:
    """Remove the region's latency record and mark it drained."""
    return routing.drain(topology, region, reason)


@task(name="restore region", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def restore_region(topology: Topology, region: str) -> routing.TrafficChange:
    """Write the region's latency record from the topology again; remove its drain marker."""
    return routing.restore(topology, region)
