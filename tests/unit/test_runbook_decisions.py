"""Table tests of the decisions that used to sit in the runbooks: failover's data-loss
source and fallback, and resync's escalation repoint -> rewind -> reclone."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from regionops.decisions import RepairDecision, assess_failover_loss, escalate_repair
from regionops.lsn import Lsn
from tests.unit.test_decisions import NOW, assert_mentions, down, replica

# --- failover data loss -----------------------------------------------------------------------

LOSS_CASES: list[tuple[str, dict[str, Any]]] = [
    (
        "wal-end-read-with-commit-times",
        dict(
            promoted="0/5000000",
            wal_end="0/5000100",
            commits=(NOW, NOW - timedelta(seconds=3)),
            old=down("eu-1", current_lsn="0/4000000"),
            replicas=[replica("us-1", receive="0/5000050")],
            bytes=256,
            seconds=3.0,
            source="its own WAL on disk",
            mentions=["at least 256 bytes", "about 3.0 s"],
        ),
    ),
    (
        "wal-end-read-nothing-lost",
        dict(
            promoted="0/5000100",
            wal_end="0/5000100",
            old=down("eu-1"),
            replicas=[],
            bytes=0,
            seconds=0.0,
            source="its own WAL on disk",
            mentions=["no data loss visible"],
        ),
    ),
    (
        "wal-end-unreadable-falls-back-to-what-replicas-received",
        dict(
            promoted="0/5000000",
            wal_end=None,
            old=down("eu-1"),
            replicas=[replica("us-1", replay="0/5000000", receive="0/5000040"), down("apac-1")],
            bytes=64,
            seconds=None,
            source="a lower bound",
            mentions=["at least 64 bytes", "0/5000040"],
        ),
    ),
    (
        "fallback-uses-the-old-primarys-last-observed-position",
        dict(
            promoted="0/5000000",
            wal_end=None,
            old=down("eu-1", current_lsn="0/5000080"),
            replicas=[replica("us-1", receive="0/5000010")],
            bytes=128,
            seconds=None,
            source="a lower bound",
            mentions=["last seen at 0/5000080"],
        ),
    ),
    (
        "nothing-known-anywhere",
        dict(
            promoted="0/5000000",
            wal_end=None,
            old=down("eu-1"),
            replicas=[down("us-1")],
            bytes=None,
            seconds=None,
            source="a lower bound",
            mentions=["data loss is unknown"],
        ),
    ),
    (
        "no-promoted-position",
        dict(
            promoted=None,
            wal_end="0/5000100",
            old=down("eu-1"),
            replicas=[],
            bytes=None,
            seconds=None,
            source="no promoted position",
            mentions=["did not report its position"],
        ),
    ),
]


@pytest.mark.parametrize("case", [c for _, c in LOSS_CASES], ids=[n for n, _ in LOSS_CASES])
def test_failover_data_loss(case: dict[str, Any]) -> None:
    old_commit, promoted_commit = case.get("commits", (None, None))
    loss = assess_failover_loss(
        Lsn.parse(case["promoted"]) if case["promoted"] else None,
        old_primary=case["old"],
        replicas=case["replicas"],
        wal_end_lsn=Lsn.parse(case["wal_end"]) if case["wal_end"] else None,
        wal_end_note="read by pg_waldump",
        old_last_commit_at=old_commit,
        promoted_last_commit_at=promoted_commit,
    )
    assert (loss.estimate.bytes, loss.estimate.seconds) == (case["bytes"], case["seconds"])
    assert case["source"] in loss.source
    assert_mentions(loss.sentence(), *case["mentions"])


# --- resync escalation --------------------------------------------------------------------------


def d(action: str, node: str = "apac-1") -> RepairDecision:
    return RepairDecision(node=node, action=action, reason=f"judged {action}")


ESCALATION_CASES: list[tuple[str, dict[str, Any]]] = [
    (
        "repoint-judged-repoint-again-escalates-to-rewind",
        dict(tried=["repoint"], again="repoint", next="rewind", mentions=["escalating to a rewind"]),
    ),
    (
        "repoint-judged-diverged-rewinds",
        dict(tried=["repoint"], again="rewind", next="rewind", mentions=["next: rewind: judged rewind"]),
    ),
    ("repoint-judged-gone-reclones", dict(tried=["repoint"], again="reclone", next="reclone", mentions=[])),
    (
        "rewind-judged-repoint-escalates-to-reclone",
        dict(tried=["rewind"], again="repoint", next="reclone", mentions=["did not stream after a rewind"]),
    ),
    (
        "reclone-forbidden",
        dict(
            tried=["rewind"], again="rewind", allow_reclone=False, next=None, mentions=["allow_reclone=false forbids"]
        ),
    ),
    ("healthy-now-stops", dict(tried=["repoint"], again="nothing", next=None, mentions=["no stronger repair"])),
    ("catching-up-stops", dict(tried=["rewind"], again="wait", next=None, mentions=["judged wait"])),
    (
        "after-a-reclone-nothing-is-stronger",
        dict(tried=["reclone"], again="rewind", next=None, mentions=["the strongest repair; giving up"]),
    ),
    (
        "round-limit",
        dict(
            tried=["repoint", "rewind", "reclone"],
            again="reclone",
            next=None,
            mentions=["after 3 repairs (repoint then rewind then reclone); giving up"],
        ),
    ),
]


@pytest.mark.parametrize("case", [c for _, c in ESCALATION_CASES], ids=[n for n, _ in ESCALATION_CASES])
def test_resync_escalation(case: dict[str, Any]) -> None:
    out = escalate_repair(
        [d(a) for a in case["tried"]], d(case["again"]), allow_reclone=case.get("allow_reclone", True), max_rounds=3
    )
    assert (out.next.action if out.next else None) == case["next"]
    assert_mentions(out.reason, *case["mentions"])
