"""Retention as a pure function: exactly the policy, never the newest verified backup."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from regionops.backup.retention import RetentionCandidate, RetentionPolicy, plan_retention

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def backups(*ages_days: float, verified: tuple[float, ...] = ()) -> list[RetentionCandidate]:
    return [
        RetentionCandidate(backup_id=f"b{age:g}d", finished_at=NOW - timedelta(days=age), verified=age in verified)
        for age in ages_days
    ]


def test_keep_last_n_deletes_the_rest():
    plan = plan_retention(backups(1, 2, 3, 4, 5), RetentionPolicy(keep_last=2), NOW)
    assert plan.keep == ["b1d", "b2d"]
    assert plan.delete == ["b3d", "b4d", "b5d"]


def test_max_age_keeps_everything_younger():
    plan = plan_retention(backups(0.5, 3, 6.9, 7.1, 30), RetentionPolicy(max_age_days=7), NOW)
    assert plan.keep == ["b0.5d", "b3d", "b6.9d"]
    assert plan.delete == ["b7.1d", "b30d"]


def test_both_rules_keep_the_union():
    plan = plan_retention(backups(1, 2, 10, 11, 12), RetentionPolicy(keep_last=3, max_age_days=5), NOW)
    assert plan.keep == ["b1d", "b2d", "b10d"]
    assert plan.delete == ["b11d", "b12d"]


def test_newest_verified_backup_is_never_deleted():
    plan = plan_retention(backups(1, 2, 20, 30, verified=(20, 30)), RetentionPolicy(keep_last=2), NOW)
    assert plan.keep == ["b1d", "b2d", "b20d"]
    assert plan.delete == ["b30d"]  # verified too, but not the newest verified
    decision = next(d for d in plan.decisions if d.backup_id == "b20d")
    assert "newest verified backup" in decision.reasons


def test_newest_backup_survives_an_age_only_policy():
    plan = plan_retention(backups(40, 50), RetentionPolicy(max_age_days=7), NOW)
    assert plan.keep == ["b40d"]
    assert plan.delete == ["b50d"]


def test_no_policy_deletes_nothing():
    plan = plan_retention(backups(1, 100, 1000), RetentionPolicy(), NOW)
    assert plan.delete == []
    assert "no retention configured" in plan.sentence()


def test_order_of_input_does_not_matter_and_sentence_names_deletions():
    unordered = list(reversed(backups(1, 2, 3)))
    plan = plan_retention(unordered, RetentionPolicy(keep_last=1), NOW)
    assert plan.keep == ["b1d"]
    assert plan.sentence() == "retention (keep the last 1): keep 1, delete 2 (b2d, b3d)"
