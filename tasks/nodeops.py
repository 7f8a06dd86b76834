"""Node-local tasks: each runs one operation of the node-operation seam (:mod:`regionops.node`).

These change a node's machine, so none retries on its own: a half-done rewind or
clone is looked at by the next observation, not repeated blindly.  Reads retry when
the failure is transient.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from regionops.model import ControlData, WalEnd
from regionops.node import NodeOpResult, StopMode, node_operator_for
from regionops.topology import Topology
from tasks.common import TRANSIENT_RETRIES


@task(name="data directory exists", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def data_dir_exists(topology: Topology, cluster: str, node: str) -> bool:
    """Whether the node's data directory holds a cluster."""
    return node_operator_for(topology, cluster).data_dir_exists(node)


@task(name="read control data", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def read_control_data(topology: Topology, cluster: str, node: str) -> ControlData | None:
    """The node's pg_control (role, timeline, checkpoint) even while it is down."""
    return node_operator_for(topology, cluster).control_data(node)


@task(name="read WAL end", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def read_wal_end(topology: Topology, cluster: str, node: str) -> WalEnd | None:
    """Where the (stopped) node's WAL on disk ends."""
    return node_operator_for(topology, cluster).wal_end(node)


@task(name="node is running", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def node_running(topology: Topology, cluster: str, node: str) -> bool:
    """Whether a postmaster runs on the node's data directory."""
    return node_operator_for(topology, cluster).is_running(node)


@task(name="start node", cache_policy=NO_CACHE)
def start_node(topology: Topology, cluster: str, node: str) -> NodeOpResult:
    """Start PostgreSQL on the node."""
    return node_operator_for(topology, cluster).start(node)


@task(name="stop node", cache_policy=NO_CACHE)
def stop_node(topology: Topology, cluster: str, node: str, mode: StopMode = "fast") -> NodeOpResult:
    """Stop PostgreSQL on the node."""
    return node_operator_for(topology, cluster).stop(node, mode)


@task(name="configure standby", cache_policy=NO_CACHE)
def configure_standby(topology: Topology, cluster: str, node: str, primary: str) -> NodeOpResult:
    """Make the stopped node start as a replica of ``primary``."""
    return node_operator_for(topology, cluster).configure_standby(node, primary)


@task(name="block primary start", cache_policy=NO_CACHE)
def block_primary_start(topology: Topology, cluster: str, node: str) -> NodeOpResult:
    """Fence on disk: the node can only ever start read-only."""
    return node_operator_for(topology, cluster).block_primary_start(node)


@task(name="rewind node", cache_policy=NO_CACHE)
def rewind_node(topology: Topology, cluster: str, node: str, source: str) -> NodeOpResult:
    """pg_rewind the stopped node from ``source`` and configure it as its replica."""
    return node_operator_for(topology, cluster).rewind(node, source)


@task(name="re-clone node", cache_policy=NO_CACHE)
def reclone_node(topology: Topology, cluster: str, node: str, source: str) -> NodeOpResult:
    """pg_basebackup the node afresh from ``source`` (old directory set aside, not deleted)."""
    return node_operator_for(topology, cluster).reclone(node, source)


@task(name="remove replaced data directory", cache_policy=NO_CACHE)
def remove_replaced(topology: Topology, cluster: str, node: str) -> NodeOpResult:
    """Delete the data directories a verified reclone set aside."""
    return node_operator_for(topology, cluster).remove_replaced(node)
