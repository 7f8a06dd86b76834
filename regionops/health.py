"""Region health as a pure function over what was observed: nodes, apps, buckets, DNS.

No I/O here: the flow gathers observations and :func:`assess_health` turns them into
a report whose problems each read as a sentence an engineer can act on.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel

from regionops.model import NodeState
from regionops.model.probes import AppProbe, BucketStatus, DnsRecord
from regionops.topology import HealthThresholds, Topology

ProblemKind = Literal[
    "node_unreachable",
    "replica_not_streaming",
    "replica_lagging",
    "replica_wrong_timeline",
    "no_primary",
    "multiple_primaries",
    "split_brain",
    "app_down",
    "app_degraded",
    "bucket_unreachable",
    "bucket_wrong_region",
    "writer_record_missing",
    "writer_not_primary",
    "slot_retaining_wal",
    "slot_lost",
    "slot_keep_unlimited",
]


class HealthProblem(BaseModel):
    """One thing wrong, with the component it concerns."""

    kind: ProblemKind
    subject: str
    message: str


class NodeHealth(BaseModel):
    """A node's row in the health table."""

    node: str
    region: str
    reachable: bool
    role: str
    timeline: int | None
    position: str | None
    lag_bytes: int | None
    lag_seconds: float | None
    lag_ms: int | None = None  # the same lag in ms (replay_lag; None while the replica has nothing to replay)
    streaming: bool | None
    fenced: bool = False
    detail: str


class WriterStatus(BaseModel):
    """Where the writer record points and whether that is the primary."""

    record: str
    target: str | None
    node: str | None


class RegionHealthReport(BaseModel):
    """The region-health runbook's result."""

    topology: str
    cluster: str
    checked_at: datetime
    healthy: bool
    primary: str | None
    nodes: list[NodeHealth]
    apps: list[AppProbe]
    buckets: list[BucketStatus]
    writer: WriterStatus
    problems: list[HealthProblem]
    actions: list[str] = []  # what the run did about a problem (a split brain is fenced at once)

    def sentence(self) -> str:
        """The one-line verdict."""
        if self.healthy:
            return (
                f"cluster {self.cluster} is healthy: {self.primary} is primary, "
                f"{len(self.nodes) - 1} replica(s) streaming, {len(self.apps)} apps up, "
                f"{len(self.buckets)} buckets reachable, writer record at the primary"
            )
        return f"cluster {self.cluster} has {len(self.problems)} problem(s): " + "; ".join(
            p.message for p in self.problems
        )

    def problem_kinds(self) -> set[str]:
        return {p.kind for p in self.problems}


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB" if n >= 1024 * 1024 else f"{n} bytes"


def writable(state: NodeState) -> bool:
    """The node takes writes: it answers, as a primary, and is not set read-only."""
    return state.reachable and state.role == "primary" and not state.read_only


def fenced_but_writable(states: Mapping[str, NodeState], fenced: Collection[str]) -> list[str]:
    """Fenced nodes that take writes: an old primary that came back (split brain), to fence at once."""
    return sorted(n for n in fenced if n in states and writable(states[n]))


def _assess_nodes(
    topo: Topology,
    cluster: str,
    states: dict[str, NodeState],
    limits: HealthThresholds,
    fenced: Collection[str] = (),
) -> tuple[str | None, list[NodeHealth], list[HealthProblem]]:
    nodes = topo.clusters[cluster].nodes
    problems: list[HealthProblem] = []
    # A fenced node is out of service whatever it answers: never the primary the others follow.
    primaries = [n for n, s in states.items() if s.reachable and s.role == "primary" and n not in fenced]
    for split in fenced_but_writable(states, fenced):
        others = ", ".join(p for p in primaries if writable(states[p])) or "no other node"
        problems.append(
            HealthProblem(
                kind="split_brain",
                subject=split,
                message=(
                    f"SPLIT BRAIN: {split} is fenced but accepts writes (a primary, not read-only) while "
                    f"{others} is the primary: writes to it are lost to the cluster"
                ),
            )
        )
    primary = primaries[0] if len(primaries) == 1 else None
    if not primaries:
        problems.append(
            HealthProblem(kind="no_primary", subject=cluster, message=f"no reachable primary in cluster {cluster}")
        )
    elif len(primaries) > 1:
        problems.append(
            HealthProblem(
                kind="multiple_primaries",
                subject=cluster,
                message=f"{len(primaries)} nodes are primary at once ({', '.join(sorted(primaries))}): split brain",
            )
        )
    pstate = states.get(primary) if primary else None
    rows: list[NodeHealth] = []
    for name, node in nodes.items():
        s = states[name]
        lag_bytes = lag_seconds = streaming = None
        if not s.reachable:
            problems.append(
                HealthProblem(
                    kind="node_unreachable",
                    subject=name,
                    message=f"node {name} ({node.region}) is down or unreachable: {s.error}",
                )
            )
        elif s.role == "replica":
            streaming = bool(s.wal_receiver and s.wal_receiver.status == "streaming")
            if pstate and pstate.current_lsn and s.replay_lsn:
                lag_bytes = max(0, pstate.current_lsn - s.replay_lsn)
            lag_seconds = s.replay_lag_seconds
            if not streaming:
                receiver = s.wal_receiver.status if s.wal_receiver else "no WAL receiver running"
                problems.append(
                    HealthProblem(
                        kind="replica_not_streaming",
                        subject=name,
                        message=f"replica {name} ({node.region}) is up but not streaming from the primary ({receiver})",
                    )
                )
            elif pstate and s.timeline is not None and pstate.timeline is not None and s.timeline != pstate.timeline:
                problems.append(
                    HealthProblem(
                        kind="replica_wrong_timeline",
                        subject=name,
                        message=f"replica {name} is on timeline {s.timeline}, the primary on {pstate.timeline}",
                    )
                )
            over_bytes = lag_bytes is not None and lag_bytes > limits.max_lag_bytes
            over_secs = lag_seconds is not None and lag_seconds > limits.max_lag_seconds
            if over_bytes or over_secs or s.replay_paused:
                secs = f"{lag_seconds:.0f} s" if lag_seconds is not None else "unknown time"
                paused = ", replay is paused" if s.replay_paused else ""
                problems.append(
                    HealthProblem(
                        kind="replica_lagging",
                        subject=name,
                        message=(
                            f"replica {name} ({node.region}) lags {_mib(lag_bytes or 0)} / {secs} behind the "
                            f"primary (limits {_mib(limits.max_lag_bytes)} / {limits.max_lag_seconds:g} s){paused}"
                        ),
                    )
                )
        rows.append(
            NodeHealth(
                node=name,
                region=node.region,
                reachable=s.reachable,
                role=s.role,
                timeline=s.timeline,
                position=str(s.position) if s.position else None,
                lag_bytes=lag_bytes,
                lag_seconds=round(lag_seconds, 1) if lag_seconds is not None else None,
                lag_ms=round(lag_seconds * 1000) if lag_seconds is not None else None,
                streaming=streaming,
                fenced=name in fenced,
                detail=s.sentence(),
            )
        )
    return primary, rows, problems


def _assess_slots(states: dict[str, NodeState], max_retained_bytes: int) -> list[HealthProblem]:
    """Slots that hold back too much WAL, slots whose WAL is gone, primaries with no cap on either."""
    problems = []
    for name, s in states.items():
        if not s.reachable:
            continue
        for slot in s.slots:
            if slot.wal_status == "lost":
                problems.append(
                    HealthProblem(
                        kind="slot_lost",
                        subject=f"{name}/{slot.slot_name}",
                        message=f"replication slot {slot.slot_name} on {name} is lost (max_slot_wal_keep_size "
                        f"removed the WAL it held): the node it serves needs a re-clone (replica-resync), "
                        f"or drop the slot if that node is gone",
                    )
                )
            elif slot.retained_bytes is not None and slot.retained_bytes > max_retained_bytes:
                problems.append(
                    HealthProblem(
                        kind="slot_retaining_wal",
                        subject=f"{name}/{slot.slot_name}",
                        message=f"replication slot {slot.slot_name} on {name} retains {slot.retained_bytes} bytes "
                        f"({_mib(slot.retained_bytes)}) of WAL, more than {_mib(max_retained_bytes)} "
                        f"({'active' if slot.active else 'inactive: its node is away'})",
                    )
                )
        if s.role == "primary" and s.max_slot_wal_keep_size_mb == -1:
            problems.append(
                HealthProblem(
                    kind="slot_keep_unlimited",
                    subject=name,
                    message=f"primary {name} has max_slot_wal_keep_size = -1: a dead node's slot can fill its disk",
                )
            )
    return problems


def _assess_apps(apps: list[AppProbe]) -> list[HealthProblem]:
    problems = []
    for app in apps:
        if not app.reachable or (app.status_code or 500) >= 500:
            problems.append(
                HealthProblem(
                    kind="app_down",
                    subject=f"app {app.region}",
                    message=f"app {app.region} is down: {app.error or app.status_code}",
                )
            )
        elif not app.healthy:
            problems.append(
                HealthProblem(
                    kind="app_degraded",
                    subject=f"app {app.region}",
                    message=f"app {app.region} is degraded: {app.sentence()}",
                )
            )
    return problems


def _assess_buckets(topo: Topology, buckets: list[BucketStatus]) -> list[HealthProblem]:
    expected = {r.bucket: r.aws_region for r in topo.regions.values()}
    problems = []
    for b in buckets:
        if not b.reachable:
            problems.append(
                HealthProblem(
                    kind="bucket_unreachable", subject=b.bucket, message=f"bucket {b.bucket} is unreachable: {b.error}"
                )
            )
        elif b.region != expected.get(b.bucket):
            problems.append(
                HealthProblem(
                    kind="bucket_wrong_region",
                    subject=b.bucket,
                    message=f"bucket {b.bucket} is in {b.region}, the topology says {expected.get(b.bucket)}",
                )
            )
    return problems


def _assess_writer(
    topo: Topology, cluster: str, record: DnsRecord | None, primary: str | None, error: str | None
) -> tuple[WriterStatus, list[HealthProblem]]:
    name = topo.writer_record(cluster)
    if record is None or not record.values:
        why = f"cannot be read: {error}" if error else "does not exist"
        return WriterStatus(record=name, target=None, node=None), [
            HealthProblem(kind="writer_record_missing", subject=name, message=f"writer record {name} {why}")
        ]
    target = record.values[0]
    node = topo.node_for_dns_name(cluster, target)
    status = WriterStatus(record=name, target=target, node=node)
    if primary is not None and node != primary:
        who = f"{node}, which is not the primary" if node else f"{target}, which is no node of {cluster}"
        return status, [
            HealthProblem(
                kind="writer_not_primary",
                subject=name,
                message=f"writer record {name} points at {who}; the primary is {primary}",
            )
        ]
    return status, []


def assess_health(
    topo: Topology,
    cluster: str,
    states: dict[str, NodeState],
    apps: list[AppProbe],
    buckets: list[BucketStatus],
    writer_record: DnsRecord | None,
    limits: HealthThresholds | None = None,
    now: datetime | None = None,
    writer_error: str | None = None,
    fenced: Collection[str] = (),
) -> RegionHealthReport:
    """Turn observations into a health report with every problem named (``fenced``: fenced nodes)."""
    limits = limits or topo.clusters[cluster].health
    primary, nodes, problems = _assess_nodes(topo, cluster, states, limits, fenced)
    problems += _assess_slots(states, topo.monitoring.thresholds.slot_retained_bytes)
    problems += _assess_apps(apps)
    problems += _assess_buckets(topo, buckets)
    writer, writer_problems = _assess_writer(topo, cluster, writer_record, primary, writer_error)
    problems += writer_problems
    return RegionHealthReport(
        topology=topo.name,
        cluster=cluster,
        checked_at=now or datetime.now(UTC),
        healthy=not problems,
        primary=primary,
        nodes=nodes,
        apps=apps,
        buckets=buckets,
        writer=writer,
        problems=problems,
    )
