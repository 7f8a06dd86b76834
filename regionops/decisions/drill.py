"""DR drill decisions, pure: what the canary's journal says about RTO and RPO, objectives and consistency.

What a cancelled drill's hook does is decided in :mod:`regionops.decisions.rescue`.

No I/O here.  The drill flow gathers the canary journal, the rows present on the new
primary and the table fingerprints of every node; these functions turn them into
figures and verdicts that read as sentences.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from regionops.model import CanaryWrite, CommonPoint
from regionops.topology import Objectives


class DrillMeasurement(BaseModel):
    """RTO, RPO and the write outage, measured from the application's own writes."""

    writes_sent: int
    writes_acknowledged: int
    injected_at: datetime
    first_ack_after_fault_at: datetime | None
    rto_seconds: float | None  # fault injected -> first acknowledged write sent after it
    unavailable_seconds: float  # the longest time without any acknowledged write
    rpo_rows: int  # acknowledged writes missing on the new primary
    rpo_seconds: float  # the span of time those lost writes cover
    lost_seqs: list[int]
    late_acks: list[int]  # committed after the client had given up on them

    def sentence(self) -> str:
        rto = (
            f"RTO {self.rto_seconds:.2f} s"
            if self.rto_seconds is not None
            else "RTO not reached (no write acknowledged after the fault)"
        )
        return (
            f"{rto}; RPO {self.rpo_rows} acknowledged write(s) lost ({self.rpo_seconds:.2f} s of writes); "
            f"writes unavailable for {self.unavailable_seconds:.2f} s; {self.writes_acknowledged} of "
            f"{self.writes_sent} canary writes acknowledged"
        )


def measure(
    journal: list[CanaryWrite], injected_at: datetime, present_on_primary: set[int], *, planned: bool = False
) -> DrillMeasurement:
    """Compute RTO, RPO and the outage from the canary journal and the rows really on the new primary.

    RTO runs from the injection to the acknowledgement of the first write *sent* after
    it (a write sent before the fault proves nothing about recovery).  A ``planned``
    move (switchover) starts with writes still flowing: its "fault" is the switchover's
    start, and what users feel is the write outage, so its RTO is the outage.  RPO
    counts the acknowledged writes absent from the new primary; its seconds are the time
    from the first lost write being sent to the last one being acknowledged.
    """
    # Each acknowledged write with its acknowledgement time (never None for these).
    acked = [(w, w.acked_at) for w in journal if w.acked and w.acked_at is not None]
    after = [(w, at) for w, at in acked if w.sent_at >= injected_at]
    first_ack = min((at for _, at in after), default=None)
    lost = sorted(((w, at) for w, at in acked if w.seq not in present_on_primary), key=lambda pair: pair[0].seq)
    rpo_seconds = (max(at for _, at in lost) - min(w.sent_at for w, _ in lost)).total_seconds() if lost else 0.0
    ack_times = sorted(at for _, at in acked)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(ack_times)]
    outage = round(max(gaps, default=0.0), 3)
    rto = round((first_ack - injected_at).total_seconds(), 3) if first_ack else None
    return DrillMeasurement(
        writes_sent=len(journal),
        writes_acknowledged=len(acked),
        injected_at=injected_at,
        first_ack_after_fault_at=first_ack,
        rto_seconds=outage if planned and rto is not None else rto,
        unavailable_seconds=outage,
        rpo_rows=len(lost),
        rpo_seconds=round(rpo_seconds, 3),
        lost_seqs=[w.seq for w, _ in lost],
        late_acks=[w.seq for w in journal if w.late_ack_at is not None],
    )


class ObjectiveVerdict(BaseModel):
    """One measured figure against the cluster's objective."""

    name: Literal["RTO", "RPO"]
    measured: float | None
    objective: float
    passed: bool

    def sentence(self) -> str:
        shown = "not reached" if self.measured is None else f"{self.measured:.2f} s"
        return f"{self.name} {shown} vs objective {self.objective:g} s: {'pass' if self.passed else 'FAIL'}"


def judge(measurement: DrillMeasurement, objectives: Objectives) -> list[ObjectiveVerdict]:
    """RTO and RPO (seconds of writes lost) against the topology's objectives."""
    rto = measurement.rto_seconds
    return [
        ObjectiveVerdict(
            name="RTO",
            measured=rto,
            objective=objectives.rto_seconds,
            passed=rto is not None and rto <= objectives.rto_seconds,
        ),
        ObjectiveVerdict(
            name="RPO",
            measured=measurement.rpo_seconds,
            objective=objectives.rpo_seconds,
            passed=measurement.rpo_seconds <= objectives.rpo_seconds,
        ),
    ]


class Fingerprint(BaseModel):
    """Row count and order-independent checksum of one table on one node."""

    rows: int
    checksum: str


class ConsistencyCheck(BaseModel):
    """Whether every compared node holds the same data as the primary."""

    primary: str
    nodes: list[str]  # replicas compared
    tables: list[str]
    not_compared: dict[str, str] = {}  # node -> why
    mismatches: list[str]
    point: CommonPoint | None = None  # where every compared node was read (all at one point)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def sentence(self) -> str:
        skipped = "".join(f"; {n} not compared ({why})" for n, why in self.not_compared.items())
        at = f" at {self.point.lsn} (writers held {self.point.held_ms:.0f} ms)" if self.point else ""
        if self.ok:
            return (
                f"consistent: {', '.join(self.nodes) or 'no replica'} hold the same rows and checksums as "
                f"{self.primary} in {len(self.tables)} table(s){at}{skipped}"
            )
        return f"INCONSISTENT{at}: {'; '.join(self.mismatches)}{skipped}"


def compare_fingerprints(
    primary: str,
    fingerprints: dict[str, dict[str, Fingerprint]],
    not_compared: dict[str, str] | None = None,
    point: CommonPoint | None = None,
) -> ConsistencyCheck:
    """Compare every node's table fingerprints with the primary's.

    The fingerprints must be of one common ``point`` (:class:`CommonPoint`): compared at
    different moments, a cluster the application writes to always differs.  Replicas
    that could not be read at the point are named in ``not_compared``, never compared.
    """
    reference = fingerprints[primary]
    mismatches = []
    replicas = sorted(n for n in fingerprints if n != primary)
    for node in replicas:
        for table, want in reference.items():
            got = fingerprints[node].get(table)
            if got is None:
                mismatches.append(f"{node} has no table {table}")
            elif got != want:
                mismatches.append(
                    f"{table} on {node}: {got.rows} rows (checksum {got.checksum}) vs "
                    f"{want.rows} rows (checksum {want.checksum}) on {primary}"
                )
    missed = {n: f"not read at the common point: {why}" for n, why in (point.missed if point else {}).items()}
    return ConsistencyCheck(
        primary=primary,
        nodes=replicas,
        tables=sorted(reference),
        mismatches=mismatches,
        not_compared={**(not_compared or {}), **missed},
        point=point,
    )
