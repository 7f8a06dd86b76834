"""The writer endpoint: where the writer DNS record points, moving it, and proving writes work.

Clients find the primary through the cluster's writer record, so a primary move is not
finished until the record points at the new primary *and* a write through it lands
there and reaches every replica.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from pydantic import BaseModel

from regionops.drivers.appwrite import AppWrite, HttpAppWriter, app_writer_for
from regionops.drivers.traffic import TrafficDriver, traffic_for
from regionops.errors import DeadlineExceeded, PreconditionFailed
from regionops.ha.fencing import FenceStore
from regionops.ha.sqlsteps import CatchUp, wait_replayed
from regionops.model.probes import DnsRecord
from regionops.topology import Topology
from regionops.waiting import poll_until


def writer_node(topology: Topology, cluster: str, traffic: TrafficDriver | None = None) -> str | None:
    """The node the writer record points at (None when missing or pointing elsewhere)."""
    record = (traffic or traffic_for(topology)).get_record(
        topology.traffic.route53_zone, topology.writer_record(cluster)
    )
    return topology.node_for_dns_name(cluster, record.values[0]) if record and record.values else None


class WriterSwitch(BaseModel):
    """The writer record moved to a new node."""

    record: str
    before: str | None
    node: str
    target: str

    def sentence(self) -> str:
        was = f" (was {self.before})" if self.before else ""
        return f"writer record {self.record} now points at {self.node} ({self.target}){was}"


def switch_writer(
    topology: Topology, cluster: str, node: str, *, fences: FenceStore, traffic: TrafficDriver | None = None
) -> WriterSwitch:
    """Point the cluster's writer record at ``node``; refuse when ``node`` is fenced."""
    marker = fences.get(cluster, node)
    if marker is not None:
        raise PreconditionFailed(f"refusing to point the writer record at {node}: {marker.sentence()}")
    traffic = traffic or traffic_for(topology)
    zone, record = topology.traffic.route53_zone, topology.writer_record(cluster)
    before = traffic.get_record(zone, record)
    target = topology.node_dns_name(cluster, node)
    after: DnsRecord = traffic.set_record(zone, record, target, ttl=topology.traffic.record_ttl)
    previous = topology.node_for_dns_name(cluster, before.values[0]) if before and before.values else None
    return WriterSwitch(record=record, before=previous, node=node, target=after.values[0])


class WriteCheck(BaseModel):
    """A write through the writer endpoint, where it landed, and which replicas replayed it."""

    ok: bool
    primary: str
    write: AppWrite | None
    attempts: int
    accepted_at: datetime | None = None  # when the write landed on the primary
    replicas: list[CatchUp] = []
    seconds: float

    def sentence(self) -> str:
        if self.write is None or not self.write.accepted:
            last = self.write.sentence() if self.write else "no answer"
            return f"no write through the writer endpoint was accepted in {self.attempts} attempt(s): {last}"
        w = self.write
        where = f"row {w.row_id} written through app {w.region} landed on {w.node} at {w.lsn}"
        if w.node != self.primary:
            return f"{where}, but the primary is {self.primary}"
        reached = [c.node for c in self.replicas if c.reached]
        missing = [c.sentence() for c in self.replicas if not c.reached]
        out = f"{where} and reached {', '.join(reached) or 'no replica'} within {self.seconds:.1f} s"
        if missing:
            out += "; NOT replicated: " + "; ".join(missing)
        return out


def verify_write(
    topology: Topology,
    cluster: str,
    primary: str,
    replicas: list[str],
    *,
    timeout: float,
    label: str = "regionops",
    writer: HttpAppWriter | None = None,
) -> WriteCheck:
    """Write a row through the apps until one lands on ``primary``, then wait for ``replicas`` to replay it.

    The app of the primary's region is tried first, then the others: a write through
    any region's app goes through the writer record.  A write that lands elsewhere
    (DNS not yet moved, an app's cached answer) is retried until the deadline.
    """
    started = time.monotonic()
    spec = topology.node(cluster, primary)
    regions = [spec.region] + [r for r in topology.regions if r != spec.region]
    writer = writer or app_writer_for(topology)
    payload = f"{label} write check {uuid.uuid4().hex[:8]}"
    attempts: list[AppWrite] = []

    def landed() -> bool:
        region = regions[len(attempts) % len(regions)]
        result = writer.write(region, topology.regions[region].app_url, payload)
        attempts.append(result)
        return result.accepted and result.node == primary

    try:
        poll_until(landed, timeout=timeout, interval=0.1, what=f"a write through the writer record on {primary}")
    except DeadlineExceeded:  # the check reports the failure as its result
        return WriteCheck(
            ok=False,
            primary=primary,
            write=attempts[-1] if attempts else None,
            attempts=len(attempts),
            seconds=round(time.monotonic() - started, 2),
        )
    write = attempts[-1]
    accepted_at = datetime.now(UTC)
    assert write.lsn is not None
    remaining = max(1.0, timeout - (time.monotonic() - started))
    caught = [wait_replayed(topology.clusters[cluster], r, write.lsn, remaining) for r in replicas]
    return WriteCheck(
        ok=all(c.reached for c in caught),
        primary=primary,
        write=write,
        attempts=len(attempts),
        accepted_at=accepted_at,
        replicas=caught,
        seconds=round(time.monotonic() - started, 2),
    )
