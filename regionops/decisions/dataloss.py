"""How much committed WAL a failover lost: old primary's last position minus the promoted one."""

from __future__ import annotations

from datetime import datetime

from regionops.decisions._common import Decision, fmt_bytes, fmt_seconds
from regionops.lsn import Lsn
from regionops.model import NodeState


class DataLossEstimate(Decision):
    """WAL bytes (and, given a WAL rate, seconds of writes) lost by promoting at ``promoted_lsn``."""

    bytes: int | None  # None: the old primary's last position is unknown
    seconds: float | None  # None: bytes unknown, or no usable WAL rate
    reason: str


def estimate_data_loss(
    old_primary_last_lsn: Lsn | None,
    promoted_lsn: Lsn,
    *,
    wal_bytes_per_second: float | None = None,
    lost_commit_seconds: float | None = None,
) -> DataLossEstimate:
    """Estimate the data a failover lost.

    ``bytes = max(0, old_primary_last_lsn - promoted_lsn)``.  The old primary's LSN is
    the last one *observed*, so the figure is a lower bound: it may have written more
    before it died.  ``seconds`` converts bytes with ``wal_bytes_per_second`` when given
    and positive, or is ``lost_commit_seconds`` when given: the time between the last
    commit the promoted node replayed and the old primary's last commit (read from its
    WAL), which measures the lost span directly.  Unknown when the old primary's last
    LSN is unknown.
    """
    if old_primary_last_lsn is None:
        return DataLossEstimate(
            bytes=None,
            seconds=None,
            reason=(
                f"data loss is unknown: the old primary's last LSN was never observed (promoted at {promoted_lsn})"
            ),
        )
    diff = old_primary_last_lsn - promoted_lsn
    lost = max(0, diff)
    if lost == 0:
        seconds: float | None = 0.0  # nothing lost is nothing lost, whatever the rate
    elif lost_commit_seconds is not None:
        seconds = max(0.0, lost_commit_seconds)
    elif wal_bytes_per_second and wal_bytes_per_second > 0:
        seconds = lost / wal_bytes_per_second
    else:
        seconds = None

    if diff < 0:
        # The promoted node is past the last LSN we saw on the old primary: that
        # observation was older than the replica's, not evidence of negative loss.
        reason = (
            f"no data loss visible: promoted at {promoted_lsn}, {fmt_bytes(-diff)} past the old "
            f"primary's last observed LSN {old_primary_last_lsn} (that observation was stale)"
        )
    elif diff == 0:
        reason = f"no data loss visible: promoted at the old primary's last observed LSN {promoted_lsn}"
    else:
        reason = (
            f"at least {fmt_bytes(lost)} of WAL lost: the old primary was last seen at "
            f"{old_primary_last_lsn}, the new primary was promoted at {promoted_lsn}"
        )
    if lost and seconds is not None and lost_commit_seconds is not None:
        reason += f", commits spanning about {fmt_seconds(seconds)} (from commit timestamps)"
    elif lost and seconds is not None:
        reason += f", about {fmt_seconds(seconds)} of writes at {wal_bytes_per_second:g} bytes/s"
    elif lost:
        reason += "; its duration is unknown without a WAL rate"
    return DataLossEstimate(bytes=lost, seconds=seconds, reason=reason)


class FailoverLoss(Decision):
    """A failover's data-loss estimate and where the old primary's last position came from."""

    estimate: DataLossEstimate
    source: str

    def sentence(self) -> str:
        """One line for the report."""
        return f"data loss: {self.estimate.reason} (old primary's last LSN from {self.source})"


def assess_failover_loss(
    promoted_lsn: Lsn | None,
    *,
    old_primary: NodeState,
    replicas: list[NodeState],
    wal_end_lsn: Lsn | None = None,
    wal_end_note: str = "",
    old_last_commit_at: datetime | None = None,
    promoted_last_commit_at: datetime | None = None,
) -> FailoverLoss:
    """Estimate what a failover lost, from the best evidence there is.

    Best: the old primary's own WAL end, read from its disk (``wal_end_lsn``; commit
    timestamps on both sides give the lost span in seconds).  When that cannot be read
    (its host is gone, the directory is unreadable), fall back to the furthest WAL anyone
    is known to hold: what the replicas received or replayed and the old primary's last
    observed position.  That is a lower bound, and the source says so.  Without a
    promoted position nothing can be said.
    """
    if promoted_lsn is None:
        unknown = DataLossEstimate(
            bytes=None, seconds=None, reason="data loss is unknown: the promoted node did not report its position"
        )
        return FailoverLoss(estimate=unknown, source="nowhere (no promoted position)")
    if wal_end_lsn is not None:
        lost_seconds = None
        if old_last_commit_at and promoted_last_commit_at:
            lost_seconds = (old_last_commit_at - promoted_last_commit_at).total_seconds()
        return FailoverLoss(
            estimate=estimate_data_loss(wal_end_lsn, promoted_lsn, lost_commit_seconds=lost_seconds),
            source=f"its own WAL on disk ({wal_end_note or wal_end_lsn})",
        )
    seen = [lsn for s in replicas for lsn in (s.receive_lsn, s.replay_lsn) if lsn is not None]
    if old_primary.current_lsn is not None:
        seen.append(old_primary.current_lsn)
    return FailoverLoss(
        estimate=estimate_data_loss(max(seen) if seen else None, promoted_lsn),
        source="the replicas' received WAL (a lower bound: it may have written more that nobody received)",
    )
