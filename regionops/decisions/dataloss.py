"""How much committed WAL a failover lost: old primary's last position minus the promoted one."""

from __future__ import annotations

from regionops.decisions._common import Decision, fmt_bytes, fmt_seconds
from regionops.lsn import Lsn


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
                f"data loss is unknown: the old primary's last LSN was never observed "
                f"(promoted at {promoted_lsn})"
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
