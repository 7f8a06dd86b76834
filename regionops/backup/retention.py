"""Retention as a pure function: which complete backups to keep, which to delete, and why.

A backup is kept when any rule keeps it:

- it is one of the newest ``keep_last``;
- it is younger than ``max_age_days``;
- it is the newest backup whose latest restore verification passed (a backup that is
  proven restorable is never pruned in favour of unproven ones);
- it is the newest backup at all (pruning never leaves a cluster without a backup).

With neither ``keep_last`` nor ``max_age_days`` set nothing is deleted.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, Field


class RetentionPolicy(BaseModel):
    """Keep the last N and/or everything younger than D days."""

    keep_last: int | None = Field(None, ge=1)
    max_age_days: float | None = Field(None, gt=0)

    def describe(self) -> str:
        """'keep the last 3 and everything younger than 7 days'."""
        parts = []
        if self.keep_last is not None:
            parts.append(f"the last {self.keep_last}")
        if self.max_age_days is not None:
            parts.append(f"everything younger than {self.max_age_days:g} days")
        return "keep " + " and ".join(parts) if parts else "keep everything (no retention configured)"


class RetentionCandidate(BaseModel):
    """What retention needs to know about one complete backup."""

    backup_id: str
    finished_at: datetime
    verified: bool = False


class RetentionDecision(BaseModel):
    """Keep or delete one backup, with the rules that decided it."""

    backup_id: str
    keep: bool
    reasons: list[str]


class RetentionPlan(BaseModel):
    """Decisions for every backup, newest first."""

    policy: RetentionPolicy
    decisions: list[RetentionDecision]

    @property
    def keep(self) -> list[str]:
        """Ids kept, newest first."""
        return [d.backup_id for d in self.decisions if d.keep]

    @property
    def delete(self) -> list[str]:
        """Ids to delete, newest first."""
        return [d.backup_id for d in self.decisions if not d.keep]

    def sentence(self) -> str:
        """One line for the report."""
        return (
            f"retention ({self.policy.describe()}): keep {len(self.keep)}, delete {len(self.delete)}"
            + (f" ({', '.join(self.delete)})" if self.delete else "")
        )


def plan_retention(
    backups: Sequence[RetentionCandidate], policy: RetentionPolicy, now: datetime
) -> RetentionPlan:
    """Decide, for each complete backup, whether the policy keeps it."""
    ordered = sorted(backups, key=lambda b: (b.finished_at, b.backup_id), reverse=True)
    newest_verified = next((b.backup_id for b in ordered if b.verified), None)
    unlimited = policy.keep_last is None and policy.max_age_days is None
    decisions = []
    for index, backup in enumerate(ordered):
        reasons = []
        if unlimited:
            reasons.append("no retention configured")
        if policy.keep_last is not None and index < policy.keep_last:
            reasons.append(f"one of the last {policy.keep_last}")
        age_days = (now - backup.finished_at).total_seconds() / 86400
        if policy.max_age_days is not None and age_days < policy.max_age_days:
            reasons.append(f"{age_days:.1f} days old, younger than {policy.max_age_days:g}")
        if backup.backup_id == newest_verified:
            reasons.append("newest verified backup")
        if index == 0:
            reasons.append("newest backup")
        keep = bool(reasons)
        if not keep:
            reasons.append(f"{age_days:.1f} days old and outside the policy")
        decisions.append(RetentionDecision(backup_id=backup.backup_id, keep=keep, reasons=reasons))
    return RetentionPlan(policy=policy, decisions=decisions)
