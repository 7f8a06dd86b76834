"""DR drill tasks: faults, the canary's measurements, table fingerprints, the alert post.

Each task is one step of the drill (the unit of retry and of the report), not one query: a
driver call, or the reads of one step at once.  Injection does not retry (a fault happens once);
reads retry when the failure is transient.  The waits are tasks too, so the drill's
time spent waiting shows in the Prefect UI (and bench/drill.py can tell it from
orchestration).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from regionops.decisions import PrimaryView, find_primary
from regionops.decisions.drill import ConsistencyCheck, Fingerprint, compare_fingerprints
from regionops.drivers.alerts import AlertPosted, alert_client_for
from regionops.drivers.canary import CANARY_TABLE, CanaryWrite, CanaryWriter, canary_rows
from regionops.drivers.common_point import CommonPointReader
from regionops.drivers.objectstore import objectstore_for
from regionops.drivers.postgres import NodeState, conninfo_for, sql_node_for
from regionops.drivers.probes import prober_for
from regionops.drivers.traffic import traffic_for
from regionops.errors import DeadlineExceeded, RunbookError
from regionops.fault_injectors import fault_injector_for
from regionops.ha import sqlsteps, writer
from regionops.ha.fencing import FenceMarker, FenceStore
from regionops.ha.sqlsteps import CatchUp
from regionops.health import RegionHealthReport, assess_health
from regionops.model import CommonPoint
from regionops.model.faults import FaultInjection, FaultName
from regionops.topology import Topology
from regionops.waiting import poll_until
from tasks.common import TRANSIENT_RETRIES
from tasks.observe import observe_nodes


@task(name="check fault", cache_policy=NO_CACHE)
def check_fault(topology: Topology, fault: FaultName, cluster: str, node: str | None) -> str:
    """How the fault would be injected; raises FaultInjectionFailed when it cannot be."""
    return fault_injector_for(topology).check(fault, cluster, node)


@task(name="inject fault", cache_policy=NO_CACHE)
def inject_fault(topology: Topology, fault: FaultName, cluster: str, node: str | None) -> FaultInjection:
    """Inject the drill's fault (once: never retried)."""
    return fault_injector_for(topology).inject(fault, cluster, node)


@task(name="resume after fault", cache_policy=NO_CACHE)
def resume_fault(topology: Topology, fault: FaultName, cluster: str, node: str | None) -> FaultInjection:
    """Undo what needs no runbook: resume frozen processes, restart stopped apps."""
    return fault_injector_for(topology).resume(fault, cluster, node)


@task(name="fingerprint at a common point", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def fingerprint_at_common_point(
    topology: Topology, cluster: str, primary: str, replicas: list[str], tables: list[str]
) -> tuple[CommonPoint, dict[str, dict[str, Fingerprint]]]:
    """Row count and checksum of each table on the primary and ``replicas``, all read at one point.

    Writers to the tables are held on the primary for an instant only (see
    :mod:`regionops.drivers.common_point`); the counting happens after.
    """
    c = topology.clusters[cluster]
    reader = CommonPointReader(
        primary, conninfo_for(c, c.nodes[primary]), {n: conninfo_for(c, c.nodes[n]) for n in replicas}
    )
    point, prints = reader.read(tables)
    return point, {
        node: {t: Fingerprint.model_validate(v) for t, v in by_table.items()} for node, by_table in prints.items()
    }


@task(name="post alert", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def post_alert(topology: Topology, payload: dict) -> AlertPosted:
    """POST an Alertmanager notification to the topology's alert receiver."""
    return alert_client_for(topology).post(payload)


def consistency_at_common_point(
    topology: Topology, cluster: str, primary: str, replicas: list[str], skipped: dict[str, str] | None = None
) -> ConsistencyCheck:
    """The canary and application tables compared on ``replicas`` against ``primary``, all read at one point
    (the application keeps writing throughout); ``skipped``: nodes not compared, and why."""
    tables = sorted({f"public.{CANARY_TABLE}", *topology.clusters[cluster].backup.fingerprint_tables})
    point, prints = fingerprint_at_common_point(topology, cluster, primary, replicas, tables)
    return compare_fingerprints(primary, prints, not_compared=skipped, point=point)


# Coarse tasks: one task run per step of the drill, not per query.  A task is the unit of
# retry and of the report; a task run per SQL call would only add API round trips.


@task(name="start canary", cache_policy=NO_CACHE, persist_result=False)
def start_canary_baseline(
    topology: Topology, cluster: str, run_id: str, interval: float, count: int, timeout: float
) -> tuple[CanaryWriter, int]:
    """Start the canary and wait for ``count`` acknowledged writes (its steady state); (canary, how many)."""
    canary = CanaryWriter(topology, cluster, run_id, interval=interval)
    canary.ensure_table()
    canary.start()
    try:

        def acked() -> int:
            n = sum(w.acked for w in canary.journal())
            return n if n >= count else 0

        return canary, poll_until(acked, timeout=timeout, interval=0.05, what=f"{count} acknowledged canary writes")
    except BaseException:
        canary.stop()  # no baseline, no drill: the canary must not keep writing
        raise


@task(name="canary after the fault", cache_policy=NO_CACHE, persist_result=False)
def canary_after_fault(
    canary: CanaryWriter, after: datetime, timeout: float, keep_writing: float
) -> tuple[datetime | None, list[CanaryWrite]]:
    """Wait for the first write acknowledged after ``after``, let the canary write ``keep_writing``
    seconds more, stop it; (first acknowledgement or None within ``timeout``, its journal)."""

    def first() -> datetime | None:
        acks = [w.acked_at for w in canary.journal() if w.acked and w.acked_at and w.sent_at >= after]
        return min(acks) if acks else None

    try:
        at = poll_until(first, timeout=timeout, interval=0.05, what="an acknowledged canary write after the fault")
    except DeadlineExceeded:
        at = None
    if at is not None:
        time.sleep(keep_writing)  # the canary keeps writing a little past recovery
    return at, canary.stop()


@task(name="find the primary", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def primary_and_rows(
    topology: Topology, cluster: str, canary_run_id: str | None = None
) -> tuple[dict[str, NodeState], PrimaryView, set[int]]:
    """Every node's state (read in parallel), the primary they and the writer record name, and
    (with ``canary_run_id``) the drill's canary rows present on that primary when it is reachable."""
    states = observe_nodes(topology, cluster)
    view = find_primary(topology, cluster, states, writer.writer_node(topology, cluster))
    rows: set[int] = set()
    if canary_run_id and view.primary and view.reachable:  # no reachable primary: the flow says so
        rows = canary_rows(topology, cluster, view.primary, canary_run_id)
    return states, view, rows


@task(name="replicas catch up", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def catch_up(topology: Topology, cluster: str, primary: str, replicas: list[str], timeout: float) -> list[CatchUp]:
    """Every replica replays the primary's WAL position of now: waited for in parallel, each with a deadline."""
    c = topology.clusters[cluster]
    position = sql_node_for(c, primary).current_lsn()
    if not replicas:
        return []
    with ThreadPoolExecutor(max_workers=len(replicas), thread_name_prefix="catch-up") as pool:
        waits = [pool.submit(sqlsteps.wait_replayed, c, n, position, timeout) for n in replicas]
        return [w.result() for w in waits]


@task(name="steady state", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def steady_state(topology: Topology, cluster: str) -> tuple[RegionHealthReport, dict[str, FenceMarker]]:
    """Region health's own assessment of the cluster and its fenced nodes, every read at once.

    The same reads (nodes, apps, buckets, writer record, fences) and the same pure
    judgment (:func:`regionops.health.assess_health`) as the region-health runbook,
    in one task: the drill needs the verdict, not a region-health run of thirteen
    task runs with its own report.
    """
    regions = list(topology.regions)
    zone, name = topology.traffic.route53_zone, topology.writer_record(cluster)
    # The nodes first, on their own: their connect timeout must not be spent waiting for the
    # interpreter while the other reads build their HTTP clients.
    states = observe_nodes(topology, cluster)
    with ThreadPoolExecutor(max_workers=2 + 2 * len(regions), thread_name_prefix="steady") as pool:
        apps = [pool.submit(lambda r: prober_for(topology).probe(r, topology.regions[r].app_url), r) for r in regions]
        buckets = [
            pool.submit(lambda r: objectstore_for(topology).bucket_status(topology.regions[r].bucket), r)
            for r in regions
        ]
        record = pool.submit(lambda: traffic_for(topology).get_record(zone, name))
        fences = pool.submit(lambda: FenceStore.for_topology(topology).fenced(cluster))
        writer_error = None
        try:
            writer_record = record.result()
        except RunbookError as exc:  # reported as the writer record's problem
            writer_record, writer_error = None, str(exc)
        report = assess_health(
            topology,
            cluster,
            states,
            [a.result() for a in apps],
            [b.result() for b in buckets],
            writer_record,
            writer_error=writer_error,
            fenced=set(fences.result()),
        )
        return report, fences.result()
