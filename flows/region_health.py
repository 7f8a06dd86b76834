"""Runbook: region health.

Probe every node, app, bucket and the writer record of a cluster; report each problem
as what it is.  Runs every few minutes; like every runbook it reports in its own Slack
thread (start and summary), and it posts a separate alert when something is wrong.

It changes one thing, at once and without asking: a fenced node (an old primary a
failover took out of service) that accepts writes again is a split brain.  Region
health makes it refuse writes over SQL (read-only default, sessions terminated), stops
it through the node seam, makes any restart read-only, and reports SPLIT BRAIN loudly.
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, Field

from regionops.errors import RunbookError
from regionops.health import RegionHealthReport, assess_health, fenced_but_writable
from regionops.runbook.context import REPORT_HOOKS, RunbookRun
from regionops.runbook.params import RunbookParams
from regionops.topology import HealthThresholds, Topology, load_topology
from tasks.monitoring import read_prometheus_alerts
from tasks.nodeops import block_primary_start, node_running, stop_node
from tasks.observe import check_bucket, observe_node, probe_app, read_writer_record, record_identity
from tasks.replication import fence_writes, fenced_nodes


class RegionHealthParams(BaseModel):
    """Parameters of the region-health runbook (rendered as a form in the Prefect UI)."""

    topology: str | None = RunbookParams.default("topology", None)
    cluster: str | None = Field(None, description="Cluster to check; default the topology's only cluster")
    max_lag_bytes: int | None = Field(None, ge=0, description="Lag limit in bytes; default from the topology")
    max_lag_seconds: float | None = Field(None, ge=0, description="Lag limit in seconds; default from the topology")
    notify: bool = Field(True, description="Post to Slack when a problem is found")


@flow(name="region-health", persist_result=True, **REPORT_HOOKS)
def region_health(params: RegionHealthParams = RegionHealthParams()) -> RegionHealthReport:
    """Probe every region of a cluster and report role, lag, apps, buckets and the writer record."""
    topology = load_topology(params.topology)
    cluster_name, cluster = topology.cluster(params.cluster)
    limits = HealthThresholds(
        max_lag_bytes=cluster.health.max_lag_bytes if params.max_lag_bytes is None else params.max_lag_bytes,
        max_lag_seconds=cluster.health.max_lag_seconds if params.max_lag_seconds is None else params.max_lag_seconds,
    )
    run = RunbookRun(
        topology,
        "region-health",
        cluster_name,
        f"Region health of {cluster_name}",
        params,
        start_lines=[f"cluster {cluster_name}: {len(cluster.nodes)} node(s), {len(topology.regions)} region(s)"],
        lock="none",  # read-only (its one action, fencing a split brain again, needs no lock: it is urgent)
    )
    with run:
        reporter = run.reporter

        # 1. Observe everything at once: probes are independent and read-only.
        nodes = {name: observe_node.submit(topology, cluster_name, name) for name in cluster.nodes}
        apps = [probe_app.submit(topology, region) for region in topology.regions]
        buckets = [check_bucket.submit(topology, region) for region in topology.regions]
        writer_error = None
        try:
            writer = read_writer_record(topology, cluster_name)
        except RunbookError as exc:
            writer, writer_error = None, str(exc)
        try:
            fences = fenced_nodes(topology, cluster_name)
        except RunbookError as exc:  # the home bucket's problem is reported with the buckets
            fences = {}
            reporter.step(f"could not read the fences of {cluster_name}: {exc}", slack=False)

        # 2. Decide what is wrong (pure) and report it.
        states = {name: fut.result() for name, fut in nodes.items()}
        report = assess_health(
            topology,
            cluster_name,
            states,
            [fut.result() for fut in apps],
            [fut.result() for fut in buckets],
            writer,
            limits,
            writer_error=writer_error,
            fenced=set(fences),
        )
        for problem in report.problems:
            reporter.step(problem.message, slack=False)

        # 3. A fenced node that takes writes: fence it again, now, and say so loudly.
        for node in fenced_but_writable(states, fences):
            done = _fence_again(topology, cluster_name, node)
            report.actions += done
            for sentence in done:
                reporter.step(sentence, slack=False)
            reporter.alert(
                f"SPLIT BRAIN in {cluster_name}: fenced {node} accepted writes; fenced it again",
                [
                    fences[node].sentence(),
                    *done,
                    f"writes {node} took since it was fenced are not on the primary: see runbooks/region-health.md",
                ],
            )
        # The monitoring system's view beside the runbook's own probes (when the topology names it).
        prometheus = read_prometheus_alerts(topology) if topology.monitoring.prometheus_url else None
        if prometheus is not None:
            reporter.step(prometheus.sentence(), slack=False)
        if report.healthy:
            # Node steps compare a data directory with this when no member answers.
            recorded = record_identity(topology, cluster_name, states)
            if recorded:
                reporter.step(recorded, slack=False)
        if not report.healthy:
            reporter.alert(
                f"Region health: {len(report.problems)} problem(s) in {cluster_name}",
                [p.message for p in report.problems],
            )
        reporter.finish(
            "healthy" if report.healthy else "problems found",
            [report.sentence(), *report.actions],
            tables={
                "nodes": [row.model_dump(exclude={"detail"}) for row in report.nodes],
                "apps": [
                    a.model_dump(include={"region", "reachable", "status_code", "status", "version", "database"})
                    for a in report.apps
                ],
                "buckets": [b.model_dump() for b in report.buckets],
                "writer record": [report.writer.model_dump()],
                **(
                    {
                        "prometheus alerts": [
                            a.model_dump(exclude={"labels"}) | {"labels": str(a.labels)} for a in prometheus.alerts
                        ]
                    }
                    if prometheus
                    else {}
                ),
            },
        )
        return report


def _fence_again(topology: Topology, cluster: str, node: str) -> list[str]:
    """Read-only over SQL, then stopped through the node seam, then a read-only restart: each step reported."""
    done: list[str] = []
    try:
        done.append(fence_writes(topology, cluster, node).sentence())
    except RunbookError as exc:
        done.append(f"could not make {node} read-only over SQL: {exc}")
    try:
        if node_running(topology, cluster, node):
            done.append(stop_node(topology, cluster, node, "fast").sentence())
        done.append(block_primary_start(topology, cluster, node).sentence())
    except RunbookError as exc:
        done.append(f"could not stop {node} through the node seam: {exc}; stop it by hand NOW")
    return done
