"""The primary lease's rules, one table row per situation a guard meets (regionops.decisions.guard)."""

from __future__ import annotations

import pytest

from regionops.decisions.guard import Designated, GuardView, decide

EU = Designated(node="eu-1", term=3)
US = Designated(node="us-1", term=4)


def view(**kw) -> GuardView:
    base = {
        "node": "eu-1",
        "role": "primary",
        "quorum_answered": True,
        "designated": EU,
        "lease_holder": "eu-1",
        "holds_lease": True,
        "seconds_since_renewal": 1.0,
        "ttl_seconds": 10.0,
        "margin_seconds": 2.0,
    }
    return GuardView(**(base | kw))


@pytest.mark.parametrize(
    ("situation", "action", "mentions"),
    [
        (view(), "renew", ["designated primary (term 3): renewing its lease"]),
        (view(lease_holder=None, holds_lease=False), "acquire", ["holds no lease: taking the primary lease"]),
        (
            view(designated=None, lease_holder=None, holds_lease=False),
            "acquire",
            ["no primary was ever designated", "term 1"],
        ),
        # Cut off from the majority: writes go on only while the lease can still be alive.
        (
            view(quorum_answered=False, designated=None, lease_holder=None, seconds_since_renewal=3.0),
            "wait",
            ["cannot reach the quorum", "renewed 3.0 s ago", "may live 7.0 s more", "stopped if this lasts 5.0 s"],
        ),
        (
            view(quorum_answered=False, designated=None, lease_holder=None, seconds_since_renewal=8.0),
            "stop",
            ["cannot reach the quorum", "renewed 8.0 s ago (TTL 10.0 s)", "before the lease can expire"],
        ),
        (
            view(quorum_answered=False, designated=None, lease_holder=None, holds_lease=False),
            "stop",
            ["lease not held"],
        ),
        # A primary whose SQL is silent is not renewed: it could wake up after a new one was promoted.
        (view(role="silent", seconds_since_renewal=2.0), "wait", ["does not answer SQL", "may live 8.0 s more"]),
        (view(role="silent", seconds_since_renewal=9.5), "stop", ["does not answer SQL"]),
        # A second primary is stopped at once, lease or not.
        (
            view(designated=US, lease_holder="us-1", holds_lease=False),
            "stop",
            ["us-1 is the designated primary (term 4)"],
        ),
        (view(designated=US, lease_holder="eu-1"), "stop", ["a second primary"]),
        (view(lease_holder="us-1", holds_lease=False), "stop", ["us-1 holds the primary lease"]),
        # Not primary: let go of the lease so a failover need not wait for it.
        (view(role="down"), "release", ["not running: releasing its primary lease"]),
        (view(role="replica"), "release", ["is a replica: releasing"]),
        (
            view(role="replica", holds_lease=False, lease_holder="us-1", designated=US),
            "nothing",
            ["holds no primary lease"],
        ),
        (view(role="down", quorum_answered=False, holds_lease=False), "nothing", ["not running"]),
    ],
)
def test_the_guard_decides_by_its_rules_in_order(situation: GuardView, action: str, mentions: list[str]) -> None:
    decision = decide(situation)
    assert decision.action == action, decision.reason
    for text in mentions:
        assert text in decision.reason, decision.reason


def test_a_cut_off_primary_is_stopped_before_its_lease_can_expire_for_any_renewal_age() -> None:
    """Whatever the last renewal's age, a primary cut off is never left writable past TTL - margin."""
    for tenths in range(0, 150):
        since = tenths / 10
        decision = decide(view(quorum_answered=False, seconds_since_renewal=since))
        assert (decision.action == "stop") == (since >= 8.0), (since, decision.reason)
