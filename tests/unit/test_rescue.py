"""What a killed drill's or switchover's hook does: exactly one writable primary, no acknowledged write lost."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from regionops.decisions.rescue import SwitchoverWindow, decide_rescue
from regionops.drivers.postgres import NodeState

T0 = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


def state(node: str, role: str = "replica", reachable: bool = True, read_only: bool = False) -> NodeState:
    return NodeState(
        node=node, reachable=reachable, role=role if reachable else "unknown", read_only=read_only, observed_at=T0
    )


@pytest.mark.parametrize(
    "case, states, writer, frozen, fenced, expected",
    [
        (
            "crash before promotion: restart the old primary",
            {"eu-1": state("eu-1", reachable=False), "us-1": state("us-1")},
            "eu-1",
            False,
            False,
            [("start", "eu-1")],
        ),
        (
            "crash after promotion, writer already moved: nothing to do",
            {"eu-1": state("eu-1", reachable=False), "us-1": state("us-1", "primary")},
            "us-1",
            False,
            True,
            [],
        ),
        (
            "promoted but the writer record not moved yet",
            {"eu-1": state("eu-1", reachable=False), "us-1": state("us-1", "primary")},
            "eu-1",
            False,
            True,
            [("point-writer", "us-1")],
        ),
        (
            "fenced and nobody promoted: a human runs failover",
            {"eu-1": state("eu-1", reachable=False), "us-1": state("us-1")},
            "eu-1",
            False,
            True,
            [("escalate", "eu-1")],
        ),
        (
            "frozen, nobody took writes: resume it",
            {"eu-1": state("eu-1", reachable=False), "us-1": state("us-1")},
            "eu-1",
            True,
            False,
            [("resume", "eu-1")],
        ),
        (
            "frozen while another took writes: kill it, never resume",
            {"eu-1": state("eu-1", reachable=False), "us-1": state("us-1", "primary")},
            "us-1",
            True,
            False,
            [("kill", "eu-1")],
        ),
    ],
)
def test_rescue_after_a_cancelled_drill_leaves_exactly_one_writable_primary(
    case, states, writer, frozen, fenced, expected
):
    fault = "primary-freeze" if frozen else "primary-crash"
    actions = decide_rescue(fault, "eu-1", states, writer, target_frozen=frozen, target_fenced_on_disk=fenced)
    assert [(a.kind, a.node) for a in actions] == expected, case


def test_rescue_fences_a_second_writable_primary_the_writer_does_not_name():
    states = {"eu-1": state("eu-1", "primary"), "us-1": state("us-1", "primary")}
    actions = decide_rescue("primary-crash", "eu-1", states, "us-1", target_frozen=False, target_fenced_on_disk=False)
    assert [(a.kind, a.node) for a in actions] == [("fence-writes", "eu-1")]


def test_rescue_lifts_the_drills_own_fence_when_nobody_was_promoted():
    states = {"eu-1": state("eu-1", reachable=False), "us-1": state("us-1"), "apac-1": state("apac-1")}
    ours = decide_rescue(
        "primary-crash",
        "eu-1",
        states,
        "eu-1",
        target_frozen=False,
        target_fenced_on_disk=True,
        fenced_by_this_drill=True,
    )
    assert [(a.kind, a.node) for a in ours] == [("unfence-start", "eu-1")]
    # someone else's fence (laid before the drill held the lock) is never lifted by the rescue
    theirs = decide_rescue("primary-crash", "eu-1", states, "eu-1", target_frozen=False, target_fenced_on_disk=True)
    assert [(a.kind, a.node) for a in theirs] == [("escalate", "eu-1")]
    # and once a replica was promoted, the drill's fence stays: eu-1 is left for replica-resync
    promoted = {**states, "us-1": state("us-1", "primary")}
    after = decide_rescue(
        "primary-crash",
        "eu-1",
        promoted,
        "us-1",
        target_frozen=False,
        target_fenced_on_disk=True,
        fenced_by_this_drill=True,
    )
    assert after == []


def window(phase: str, old: str = "us-1", new: str = "eu-1") -> SwitchoverWindow:
    return SwitchoverWindow(old=old, new=new, phase=phase)


# The drill's rollback: a switchover from us-1 (after the drill's failover) back to eu-1, killed
# after it stopped us-1; apac-1 streams from us-1.  The drill's target was eu-1.
STOPPED_OLD = {"eu-1": state("eu-1"), "us-1": state("us-1", reachable=False), "apac-1": state("apac-1")}


@pytest.mark.parametrize(
    "case, states, writer, win, writer_fenced, expected",
    [
        (
            "killed after stopping the old primary, before promoting: the old one gets its writes back",
            STOPPED_OLD,
            "us-1",
            window("stopping"),
            False,
            [("restore-writer", "us-1")],
        ),
        (
            "killed while fenced but still running: its writes back",
            {**STOPPED_OLD, "us-1": state("us-1", "primary", read_only=True)},
            "us-1",
            window("stopping"),
            False,
            [("restore-writer", "us-1")],
        ),
        (
            "killed while promoting, the target not promoted: stop it first, then the old one's writes back",
            STOPPED_OLD,
            "us-1",
            window("promoting"),
            False,
            [("kill", "eu-1"), ("restore-writer", "us-1")],
        ),
        (
            "killed after promoting, before the writer moved: complete the move, keep the old one down",
            {**STOPPED_OLD, "eu-1": state("eu-1", "primary")},
            "us-1",
            window("promoting"),
            False,
            [("block-start", "us-1"), ("point-writer", "eu-1")],
        ),
        (
            "killed after the writer moved: the old primary must not start as a second one",
            {**STOPPED_OLD, "eu-1": state("eu-1", "primary")},
            "eu-1",
            window("moved"),
            False,
            [("block-start", "us-1")],
        ),
        (
            "the stopped old primary is fenced by someone else: never unfenced, named",
            STOPPED_OLD,
            "us-1",
            window("stopping"),
            True,
            [("escalate", "us-1")],
        ),
        (
            "no journal, same state: the writer record's node still gets its writes back",
            STOPPED_OLD,
            "us-1",
            None,
            False,
            [("restore-writer", "us-1")],
        ),
        (
            "a promoted node that takes no writes: two candidates, a human decides",
            {**STOPPED_OLD, "eu-1": state("eu-1", "primary", read_only=True)},
            "us-1",
            window("promoting"),
            False,
            [("escalate", "eu-1")],
        ),
        (
            "the writer record names a replica and nobody takes writes: failover, named",
            {"eu-1": state("eu-1"), "us-1": state("us-1"), "apac-1": state("apac-1")},
            "us-1",
            None,
            False,
            [("escalate", "us-1")],
        ),
        (
            "cancelled before it stopped writes: nothing to do",
            {**STOPPED_OLD, "us-1": state("us-1", "primary")},
            "us-1",
            window("stopping"),
            False,
            [],
        ),
    ],
)
def test_a_switchover_killed_in_its_critical_window_leaves_one_writable_primary(
    case, states, writer, win, writer_fenced, expected
):
    for fault, target in (("", None), ("primary-crash", "eu-1")):  # its own hook, and the drill's
        actions = decide_rescue(
            fault,
            target,
            states,
            writer,
            target_frozen=False,
            target_fenced_on_disk=False,
            window=win,
            writer_fenced=writer_fenced,
        )
        assert [(a.kind, a.node) for a in actions] == expected, (case, target)
        writable_after = {a.node for a in actions if a.kind == "restore-writer"} | {
            n for n, s in states.items() if s.role == "primary" and not s.read_only
        }
        assert len(writable_after) <= 1, case


def test_the_old_primary_takes_writes_again_only_once_the_target_is_stopped():
    actions = decide_rescue(
        "", None, STOPPED_OLD, "us-1", target_frozen=False, target_fenced_on_disk=False, window=window("promoting")
    )
    kill, restore = actions
    assert kill.stop_if_failed and not restore.stop_if_failed
