"""Observation tasks: read state, change nothing.  Never cached: state is always fresh.

One task writes a record of what it saw: the system identifier a healthy cluster's
members agree on (:mod:`regionops.ha.identity`), which node steps compare with when no
member answers.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from prefect import task
from prefect.cache_policies import NO_CACHE

from regionops.drivers.objectstore import objectstore_for
from regionops.drivers.postgres import NodeState, conninfo_for, observer_for
from regionops.drivers.probes import prober_for
from regionops.drivers.traffic import traffic_for
from regionops.errors import RunbookError
from regionops.ha.identity import IdentityStore
from regionops.model.probes import AppProbe, BucketStatus, DnsRecord
from regionops.topology import Topology
from tasks.common import TRANSIENT_RETRIES


@task(name="observe node", cache_policy=NO_CACHE)
def observe_node(topology: Topology, cluster: str, node: str) -> NodeState:
    """Role, timeline, LSNs, lag and replication of one node (unreachable is a result, not an error)."""
    c = topology.clusters[cluster]
    return observer_for().observe(node, conninfo_for(c, c.nodes[node]))


def observe_nodes(topology: Topology, cluster: str, nodes: list[str] | None = None) -> dict[str, NodeState]:
    """Every named node's state (default: the cluster's), read in parallel threads, in the caller's task.

    One connection per node at once: an unreachable node costs its connect timeout once,
    not once per node before it.
    """
    c = topology.clusters[cluster]
    names = nodes if nodes is not None else list(c.nodes)
    observer = observer_for()
    with ThreadPoolExecutor(max_workers=max(1, len(names)), thread_name_prefix="observe") as pool:
        futures = {name: pool.submit(observer.observe, name, conninfo_for(c, c.nodes[name])) for name in names}
        return {name: fut.result() for name, fut in futures.items()}


@task(name="observe cluster", cache_policy=NO_CACHE)
def observe_cluster(topology: Topology, cluster: str, nodes: list[str] | None = None) -> dict[str, NodeState]:
    """Every node's state, observed in parallel (unreachable nodes are states too).

    One task for the whole cluster, not one per node: the nodes are read at the same
    moment in threads, and a task run per node would add its API round trips three
    times over on a failover's critical path.
    """
    return observe_nodes(topology, cluster, nodes)


@task(name="probe app", cache_policy=NO_CACHE)
def probe_app(topology: Topology, region: str) -> AppProbe:
    """GET the region's app /health."""
    return prober_for(topology).probe(region, topology.regions[region].app_url)


@task(name="check bucket", cache_policy=NO_CACHE)
def check_bucket(topology: Topology, region: str) -> BucketStatus:
    """Whether the region's bucket answers, and which AWS region it reports."""
    return objectstore_for(topology).bucket_status(topology.regions[region].bucket)


@task(name="read writer record", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def read_writer_record(topology: Topology, cluster: str) -> DnsRecord | None:
    """The cluster's writer DNS record as Route53 has it."""
    return traffic_for(topology).get_record(topology.traffic.route53_zone, topology.writer_record(cluster))


@task(name="record cluster identity", cache_policy=NO_CACHE)
def record_identity(topology: Topology, cluster: str, states: dict[str, NodeState]) -> str | None:
    """Record the system identifier a healthy cluster's members agree on; a sentence, or None when not recorded."""
    try:
        identity = IdentityStore.for_topology(topology).record_healthy(cluster, states, "region-health")
    except RunbookError as exc:  # the home bucket's trouble is reported with the buckets
        return f"could not record the identity of {cluster}: {exc}"
    return identity.sentence() if identity else None
