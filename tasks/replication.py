"""Cluster-level tasks of the primary-moving runbooks: SQL steps and the writer record.

Thin: each calls one function of :mod:`regionops.ha`.  Steps that change the cluster
do not retry (a promotion must happen once); waits carry their own deadlines.
"""

from __future__ import annotations

import os
import socket

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run as current_run

from regionops.ha import confirm, sqlsteps, writer
from regionops.ha.fencing import FenceCleared, FenceMarker, Fencer, FenceStore, FenceWrite
from regionops.lsn import Lsn
from regionops.topology import Topology
from tasks.common import TRANSIENT_RETRIES


@task(name="confirm primary down", cache_policy=NO_CACHE)
def confirm_primary_down(
    topology: Topology,
    cluster: str,
    node: str,
    replicas: list[str],
    probes: int,
    grace_seconds: float,
    connect_timeout: float,
) -> confirm.PrimaryDownCheck:
    """Probe the primary and watch the replicas' WAL receivers until the decision is sure (or at the ceiling)."""
    return confirm.confirm_primary_down(
        topology.clusters[cluster],
        node,
        replicas,
        probes=probes,
        grace_seconds=grace_seconds,
        connect_timeout=connect_timeout,
    )


@task(name="writer record target", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def writer_node(topology: Topology, cluster: str) -> str | None:
    """The node the writer record points at."""
    return writer.writer_node(topology, cluster)


@task(name="fence writes", cache_policy=NO_CACHE)
def fence_writes(topology: Topology, cluster: str, node: str) -> sqlsteps.WriteFence:
    """Read-only for new transactions, then terminate every client session."""
    return sqlsteps.fence_writes(topology.clusters[cluster], node)


@task(name="unfence writes", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def unfence_writes(topology: Topology, cluster: str, node: str) -> sqlsteps.WriteUnfence:
    """Give writes back to a node whose switchover was rolled back."""
    return sqlsteps.unfence_writes(topology.clusters[cluster], node)


@task(name="clear write fence", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def clear_write_fence(topology: Topology, cluster: str, node: str) -> sqlsteps.WriteFenceCleared:
    """Drop the switchover's read-only setting from a demoted primary that now runs as a replica."""
    return sqlsteps.clear_write_fence(topology.clusters[cluster], node)


@task(name="wait for replay", cache_policy=NO_CACHE)
def wait_replayed(
    topology: Topology, cluster: str, node: str, target: Lsn, timeout: float, past: bool = False
) -> sqlsteps.CatchUp:
    """Wait (with a deadline) until the node has replayed ``target``."""
    return sqlsteps.wait_replayed(topology.clusters[cluster], node, target, timeout, past=past)


@task(name="let replicas replay", cache_policy=NO_CACHE)
def replay_received(
    topology: Topology, cluster: str, targets: dict[str, Lsn], timeout: float
) -> dict[str, sqlsteps.NodeState]:
    """Wait (together, one deadline) until each replica replayed the WAL it had received; their states then."""
    return sqlsteps.replay_received(topology.clusters[cluster], targets, timeout)


@task(name="promote", cache_policy=NO_CACHE)
def promote(topology: Topology, cluster: str, node: str, timeout: int = 60) -> sqlsteps.Promotion:
    """Promote the replica (pg_promote, waiting) and clear its replica settings."""
    return sqlsteps.promote(topology.clusters[cluster], node, timeout)


@task(name="checkpoint", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def checkpoint(topology: Topology, cluster: str, node: str) -> sqlsteps.Checkpoint:
    """Force a checkpoint (pg_rewind needs a freshly promoted source's timeline in its pg_control)."""
    return sqlsteps.checkpoint(topology.clusters[cluster], node)


@task(name="ensure slots", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def ensure_slots(topology: Topology, cluster: str, primary: str, nodes: list[str]) -> sqlsteps.SlotsEnsured:
    """A replication slot on the primary for each of ``nodes`` (idempotent)."""
    return sqlsteps.ensure_slots(topology.clusters[cluster], primary, nodes)


@task(name="drop stale slots", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def drop_stale_slots(topology: Topology, cluster: str, node: str) -> sqlsteps.SlotsDropped:
    """Drop the slots a demoted primary still holds."""
    return sqlsteps.drop_stale_slots(topology.clusters[cluster], node)


@task(name="re-point replica", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def repoint_replica(topology: Topology, cluster: str, node: str, primary: str) -> sqlsteps.Repoint:
    """primary_conninfo and slot of a running replica -> ``primary``, one reload (idempotent)."""
    return sqlsteps.repoint_replica(topology.clusters[cluster], node, primary)


@task(name="point replicas at the new primary", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def follow_new_primary(
    topology: Topology, cluster: str, primary: str, followers: list[str], others: list[str]
) -> tuple[sqlsteps.SlotsEnsured, list[sqlsteps.Repoint]]:
    """Slots for ``others`` on ``primary``, then each follower re-pointed at it (every part idempotent).

    One task: a slot and a re-point are one SQL call each, and a retry of the whole is
    harmless, so separate tasks would buy nothing but orchestration time.
    """
    spec = topology.clusters[cluster]
    slots = sqlsteps.ensure_slots(spec, primary, others)
    return slots, [sqlsteps.repoint_replica(spec, node, primary) for node in followers]


@task(name="switch writer record", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def switch_writer(topology: Topology, cluster: str, node: str) -> writer.WriterSwitch:
    """Point the writer DNS record at ``node`` (refused when it is fenced)."""
    return writer.switch_writer(topology, cluster, node, fences=FenceStore.for_topology(topology))


@task(name="verify a write", cache_policy=NO_CACHE)
def verify_write(
    topology: Topology, cluster: str, primary: str, replicas: list[str], timeout: float, label: str
) -> writer.WriteCheck:
    """A write through the writer endpoint lands on ``primary`` and reaches ``replicas``."""
    return writer.verify_write(topology, cluster, primary, replicas, timeout=timeout, label=label)


@task(name="verify streaming", cache_policy=NO_CACHE)
def wait_streaming(
    topology: Topology, cluster: str, node: str, primary: str, max_lag_bytes: int, timeout: float
) -> sqlsteps.StreamingCheck:
    """Wait (with a deadline) until the replica streams from ``primary`` within the lag bound."""
    return sqlsteps.wait_streaming(topology.clusters[cluster], node, primary, max_lag_bytes, timeout)


def current_fencer(topology: Topology, runbook: str) -> Fencer:
    """Who is acting: this runbook's run (name, id, link) and the worker it runs on (region, host)."""
    run_id = current_run.get_id()
    url = (topology.prefect.run_link(run_id) or current_run.get_ui_url()) if run_id else None
    return Fencer(
        runbook=runbook,
        run_name=current_run.get_name(),
        run_id=str(run_id) if run_id else None,
        run_url=url,
        worker_region=os.environ.get("REGIONOPS_REGION"),
        worker_host=socket.gethostname(),
    )


@task(name="fenced nodes", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def fenced_nodes(topology: Topology, cluster: str) -> dict[str, FenceMarker]:
    """Every fenced node of the cluster (the shared fence records in its home bucket)."""
    return FenceStore.for_topology(topology).fenced(cluster)


@task(name="record fence", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def mark_fenced(topology: Topology, marker: FenceMarker) -> FenceWrite:
    """Record a fence (create-only): returns our record, or the earlier one another run wrote first."""
    return FenceStore.for_topology(topology).mark(marker)


@task(name="clear fence", cache_policy=NO_CACHE)
def clear_fence(topology: Topology, cluster: str, node: str, by: Fencer, reason: str) -> FenceCleared | None:
    """Remove a node's fence (kept under cleared/ with who and why); None when it had none."""
    return FenceStore.for_topology(topology).clear(cluster, node, by=by, reason=reason)
