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

from regionops.lsn import Lsn
from regionops.model import CanaryWrite, CommonPoint
from regionops.topology import Objectives


class DrillMeasurement(BaseModel):
    """RTO, RPO and the write outage, measured from the application's own writes."""

    writes_sent: int
    writes_acknowledged: int
    injected_at: datetime
    first_ack_after_fault_at: datetime | None
    rto_seconds: float | None  # fault injected -> first acknowledged write sent after it
    unavailable_seconds: float  # the longest time without any acknowledged write (to the last write sent)
    still_unavailable: bool = False  # no write was acknowledged after the fault when the canary stopped
    rpo_rows: int | None  # acknowledged writes missing on the new primary (None: no primary answers)
    rpo_seconds: float | None  # the span of time those lost writes cover
    rpo_bytes: int | None = None  # WAL from the last kept write to the last lost one, on the old primary
    lost_seqs: list[int]
    late_acks: list[int]  # committed after the client had given up on them

    def rpo_sentence(self) -> str:
        """The RPO in rows, seconds and bytes (or why it is unknown)."""
        if self.rpo_rows is None:
            return "RPO unknown: no node answers as primary, so which acknowledged writes survive cannot be read"
        wal = f", {self.rpo_bytes} bytes of WAL" if self.rpo_bytes is not None else ""
        return f"RPO {self.rpo_rows} acknowledged write(s) lost ({self.rpo_seconds or 0:.2f} s of writes{wal})"

    def sentence(self) -> str:
        rto = (
            f"RTO {self.rto_seconds:.2f} s"
            if self.rto_seconds is not None
            else "RTO not reached (no write acknowledged after the fault)"
        )
        outage = f"writes unavailable for {self.unavailable_seconds:.2f} s" + (
            " and still unavailable when the canary stopped" if self.still_unavailable else ""
        )
        return (
            f"{rto}; {self.rpo_sentence()}; {outage}; {self.writes_acknowledged} of "
            f"{self.writes_sent} canary writes acknowledged"
        )


def measure(
    journal: list[CanaryWrite], injected_at: datetime, present_on_primary: set[int] | None, *, planned: bool = False
) -> DrillMeasurement:
    """Compute RTO, RPO and the outage from the canary journal and the rows really on the new primary.

    RTO runs from the injection to the acknowledgement of the first write *sent* after
    it (a write sent before the fault proves nothing about recovery).  A ``planned``
    move (switchover) starts with writes still flowing: its "fault" is the switchover's
    start, and what users feel is the write outage, so its RTO is the outage.  RPO
    counts the acknowledged writes absent from the new primary; its seconds are the time
    from the first lost write being sent to the last one being acknowledged; its bytes
    the WAL between the last write the new primary kept and the last one it lost, on the
    node that acknowledged them.  With no primary to read (``present_on_primary`` None)
    the RPO is unknown, and said so; the outage is still measured.  The outage runs to
    the last write sent: a canary that ends without an acknowledgement after the fault
    was unavailable until then, not "0 s".
    """
    # Each acknowledged write with its acknowledgement time (never None for these).
    acked = [(w, w.acked_at) for w in journal if w.acked and w.acked_at is not None]
    after = [(w, at) for w, at in acked if w.sent_at >= injected_at]
    first_ack = min((at for _, at in after), default=None)
    ack_times = sorted(at for _, at in acked)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(ack_times)]
    last_sent = max((w.sent_at for w in journal), default=None)
    if ack_times and last_sent is not None and last_sent > ack_times[-1]:
        gaps.append((last_sent - ack_times[-1]).total_seconds())
    outage = round(max(gaps, default=0.0), 3)
    rto = round((first_ack - injected_at).total_seconds(), 3) if first_ack else None
    lost = (
        sorted(((w, at) for w, at in acked if w.seq not in present_on_primary), key=lambda pair: pair[0].seq)
        if present_on_primary is not None
        else []
    )
    rpo_seconds = (max(at for _, at in lost) - min(w.sent_at for w, _ in lost)).total_seconds() if lost else 0.0
    known = present_on_primary is not None
    return DrillMeasurement(
        writes_sent=len(journal),
        writes_acknowledged=len(acked),
        injected_at=injected_at,
        first_ack_after_fault_at=first_ack,
        rto_seconds=outage if planned and rto is not None else rto,
        unavailable_seconds=outage,
        still_unavailable=first_ack is None and not planned,
        rpo_rows=len(lost) if known else None,
        rpo_seconds=round(rpo_seconds, 3) if known else None,
        rpo_bytes=_lost_wal_bytes([w for w, _ in lost], [w for w, _ in acked]) if known else None,
        lost_seqs=[w.seq for w, _ in lost],
        late_acks=[w.seq for w in journal if w.late_ack_at is not None],
    )


def _lost_wal_bytes(lost: list[CanaryWrite], acked: list[CanaryWrite]) -> int | None:
    """WAL bytes from the last kept write to the last lost one, both on the node that acknowledged the lost ones.

    A lower bound of what the promoted node lacked (it may have lacked up to one canary
    interval more); None when the writes carry no WAL position (an older canary).
    """
    if not lost:
        return 0
    last_lost = max(lost, key=lambda w: w.seq)
    lost_seqs = {w.seq for w in lost}
    node = last_lost.node
    kept = [w for w in acked if w.node == node and w.seq not in lost_seqs and w.seq < min(lost_seqs) and w.lsn]
    if last_lost.lsn is None or not kept:
        return None
    return max(0, Lsn.parse(last_lost.lsn) - Lsn.parse(max(kept, key=lambda w: w.seq).lsn or "0/0"))


class ObjectiveVerdict(BaseModel):
    """One measured figure against the cluster's objective."""

    name: Literal["RTO", "RPO"]
    measured: float | None
    objective: float
    passed: bool

    def sentence(self) -> str:
        unmeasured = "not reached" if self.name == "RTO" else "unknown"
        shown = unmeasured if self.measured is None else f"{self.measured:.2f} s"
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
            passed=measurement.rpo_seconds is not None and measurement.rpo_seconds <= objectives.rpo_seconds,
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
