"""Table-driven tests of the pure decisions: NodeStates built by hand, no servers, no clock."""

from __future__ import annotations

import ast
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from regionops.decisions import (
    DataLossEstimate,
    ProbeOutcome,
    PromotionDecision,
    RepairDecision,
    choose_promotion_candidate,
    decide_repair,
    estimate_data_loss,
)
from regionops.drivers.postgres import NodeState, WalReceiver
from regionops.errors import ConfigurationError
from regionops.lsn import Lsn
from regionops.topology import Topology, parse_topology

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
SYSID = "7300000000000000001"
OTHER_SYSID = "7399999999999999999"
EU_EP = ("db-eu-1", 5432)
US_EP = ("db-us-1", 5432)


# --- builders -----------------------------------------------------------------------


def make_topology(priorities: dict[str, int] | None = None, residency: str | list[str] = "global") -> Topology:
    """core: eu-1 (eu, primary), us-1 (us), apac-1 (apac); priorities 100/90/80 unless given."""
    prio = {"eu-1": 100, "us-1": 90, "apac-1": 80, **(priorities or {})}
    regions = {
        r: {
            "aws_region": aws,
            "residency": r,
            "app_url": f"https://{r}.example.com",
            "bucket": f"bucket-{r}",
            "work_pool": f"pool-{r}",
        }
        for r, aws in (("eu", "eu-west-1"), ("us", "us-east-1"), ("apac", "ap-southeast-1"))
    }
    nodes = {
        name: {
            "region": name.split("-")[0],
            "host": f"db-{name}",
            "port": 5432,
            "data_dir": "/var/lib/postgresql/data",
            "priority": p,
        }
        for name, p in prio.items()
    }
    return parse_topology(
        {
            "name": "test",
            "regions": regions,
            "clusters": {
                "core": {
                    "residency": residency,
                    "nodes": nodes,
                    "writer_record": "writer.core.db.example.com.",
                }
            },
            "traffic": {"route53_zone": "db.example.com."},
        }
    )


TOPO = make_topology()


def primary(
    name: str = "eu-1",
    *,
    lsn: str = "0/5000000",
    timeline: int = 1,
    sysid: str | None = SYSID,
) -> NodeState:
    return NodeState(
        node=name,
        reachable=True,
        role="primary",
        system_identifier=sysid,
        timeline=timeline,
        current_lsn=lsn,
        observed_at=NOW,
    )


def replica(
    name: str,
    *,
    replay: str | None = "0/5000000",
    receive: str | None = None,
    timeline: int | None = 1,
    sysid: str | None = SYSID,
    status: str | None = "streaming",
    sender: tuple[str, int | None] = EU_EP,
    msg_age: float | None = 0.5,
    paused: bool = False,
) -> NodeState:
    """A reachable replica; ``status=None`` means no WAL receiver at all."""
    receiver = None
    if status is not None:
        receiver = WalReceiver(
            status=status,
            sender_host=sender[0],
            sender_port=sender[1],
            received_tli=timeline,
            last_msg_age_seconds=msg_age,
        )
    return NodeState(
        node=name,
        reachable=True,
        role="replica",
        system_identifier=sysid,
        timeline=timeline,
        receive_lsn=receive if receive is not None else replay,
        replay_lsn=replay,
        replay_paused=paused,
        wal_receiver=receiver,
        observed_at=NOW,
    )


def down(name: str, error: str = "connection refused", **last_known: Any) -> NodeState:
    """An unreachable node; ``last_known`` fields model state remembered from before."""
    return NodeState(node=name, reachable=False, error=error, observed_at=NOW, **last_known)


def states(*nodes: NodeState) -> dict[str, NodeState]:
    return {s.node: s for s in nodes}


def assert_mentions(reason: str, *fragments: str) -> None:
    missing = [f for f in fragments if f not in reason]
    assert not missing, f"reason {reason!r} does not mention {missing}"


# --- choose_promotion_candidate ------------------------------------------------------

PROMOTION_CASES: list[tuple[str, dict[str, Any]]] = [
    (
        "highest-replay-lsn-wins",
        dict(
            states=states(down("eu-1"), replica("us-1", replay="0/5000000"), replica("apac-1", replay="0/5000078")),
            want="apac-1",
            mentions=[
                "promote apac-1",
                "replayed the most WAL",
                "0/5000078",
                "120 bytes ahead of us-1",
                "eu-1 (it is the old primary and it is unreachable (connection refused))",
            ],
        ),
    ),
    (
        "lsn-tie-broken-by-priority",
        dict(
            states=states(down("eu-1"), replica("us-1"), replica("apac-1")),
            want="us-1",
            mentions=["promote us-1", "level with apac-1 at 0/5000000", "higher priority (90 vs 80)"],
        ),
    ),
    (
        "lsn-and-priority-tie-broken-by-name",
        dict(
            topology=make_topology({"apac-1": 90}),
            states=states(down("eu-1"), replica("us-1"), replica("apac-1")),
            want="apac-1",
            mentions=["promote apac-1", "level with us-1", "same priority (90)", "name breaks the tie"],
        ),
    ),
    (
        "higher-lsn-beats-higher-priority",
        dict(
            states=states(down("eu-1"), replica("us-1", replay="0/5000000"), replica("apac-1", replay="0/5000001")),
            want="apac-1",
            mentions=["1 byte ahead of us-1"],
        ),
    ),
    (
        "receive-lsn-stands-in-for-unknown-replay",
        dict(
            states=states(
                down("eu-1"),
                replica("us-1", replay=None, receive="0/6000000"),
                replica("apac-1", replay="0/5000000"),
            ),
            want="us-1",
            mentions=["received (replay position unknown) the most WAL", "0/6000000", "16777216 bytes (16.0 MiB)"],
        ),
    ),
    (
        "excluded-region",
        dict(
            states=states(down("eu-1"), replica("us-1", replay="0/9000000"), replica("apac-1")),
            exclude_regions={"us"},
            want="apac-1",
            mentions=["only eligible replica", "us-1 (its region us is excluded)"],
        ),
    ),
    (
        "outside-allowed-zones",
        dict(
            states=states(down("eu-1"), replica("us-1", replay="0/9000000"), replica("apac-1")),
            allowed_zones={"eu", "apac"},
            want="apac-1",
            mentions=["us-1 (its region us is in residency zone us, outside the allowed zones (apac, eu))"],
        ),
    ),
    (
        "residency-forbidden-by-cluster",
        dict(
            # parse_topology refuses such a topology; model_copy simulates the cluster's
            # residency being narrowed after the nodes were placed: the decision re-checks.
            topology=TOPO.model_copy(
                update={"clusters": {"core": TOPO.clusters["core"].model_copy(update={"residency": ["eu", "us"]})}}
            ),
            states=states(down("eu-1"), replica("us-1"), replica("apac-1", replay="0/9000000")),
            want="us-1",
            mentions=["apac-1 (its region apac is in residency zone apac, which cluster core forbids (eu, us))"],
        ),
    ),
    (
        "unreachable-replica-ruled-out",
        dict(
            states=states(down("eu-1"), down("us-1", "timeout expired"), replica("apac-1")),
            want="apac-1",
            mentions=["only eligible replica (replayed 0/5000000)", "us-1 (it is unreachable (timeout expired))"],
        ),
    ),
    (
        "reachable-old-primary-never-chosen",
        dict(
            states=states(primary("eu-1", lsn="0/9000000"), replica("us-1"), replica("apac-1")),
            want="us-1",
            mentions=["eu-1 (it is the old primary and it is already a primary)"],
        ),
    ),
    (
        "foreign-system-identifier-vs-old-primary",
        dict(
            states=states(
                down("eu-1", system_identifier=SYSID),
                replica("us-1", replay="0/9000000", sysid=OTHER_SYSID),
                replica("apac-1"),
            ),
            want="apac-1",
            mentions=[
                f"its system identifier {OTHER_SYSID} differs from the cluster's {SYSID} (that of the old primary eu-1)"
            ],
        ),
    ),
    (
        "system-identifier-by-majority-without-old-primary",
        dict(
            states=states(primary("eu-1"), replica("us-1"), replica("apac-1", replay="0/9000000", sysid=OTHER_SYSID)),
            old_primary=None,
            want="us-1",
            mentions=["held by 2 of 3 reachable nodes", "eu-1 (it is already a primary)"],
        ),
    ),
    (
        "system-identifier-ambiguous-blocks-promotion",
        dict(
            states=states(down("eu-1"), replica("us-1"), replica("apac-1", sysid=OTHER_SYSID)),
            want=None,
            mentions=["no replica of core can be promoted", "ambiguous: reachable nodes disagree"],
        ),
    ),
    (
        "replica-without-system-identifier",
        dict(
            states=states(down("eu-1", system_identifier=SYSID), replica("us-1", sysid=None), replica("apac-1")),
            want="apac-1",
            mentions=[f"us-1 (its system identifier is unknown (the cluster's is {SYSID}))"],
        ),
    ),
    (
        "no-system-identifier-anywhere-skips-the-check",
        dict(
            states=states(down("eu-1"), replica("us-1", sysid=None), replica("apac-1", sysid=None)),
            want="us-1",
            mentions=["promote us-1"],
        ),
    ),
    (
        "unobserved-node",
        dict(
            states=states(down("eu-1"), replica("apac-1")),
            want="apac-1",
            mentions=["us-1 (it was not observed)"],
        ),
    ),
    (
        "unknown-role-and-no-position",
        dict(
            states=states(
                down("eu-1"),
                NodeState(node="us-1", reachable=True, role="unknown", system_identifier=SYSID, observed_at=NOW),
                replica("apac-1", replay=None),
            ),
            want=None,
            mentions=["us-1: its role is unknown", "apac-1: its WAL position is unknown"],
        ),
    ),
    (
        "node-not-in-topology",
        dict(
            states=states(down("eu-1"), replica("us-1"), replica("apac-1"), replica("ghost-1", replay="0/9000000")),
            want="us-1",
            mentions=["ghost-1 (it is not a node of cluster core in the topology)"],
        ),
    ),
    (
        "none-eligible-lists-every-node",
        dict(
            states=states(primary("eu-1"), down("us-1", "timeout"), replica("apac-1")),
            exclude_regions={"apac"},
            want=None,
            mentions=[
                "no replica of core can be promoted",
                "eu-1: it is the old primary and it is already a primary",
                "us-1: it is unreachable (timeout)",
                "apac-1: its region apac is excluded",
            ],
        ),
    ),
]


@pytest.mark.parametrize("case", [c for _, c in PROMOTION_CASES], ids=[i for i, _ in PROMOTION_CASES])
def test_choose_promotion_candidate(case: dict[str, Any]) -> None:
    decision = choose_promotion_candidate(
        case.get("topology", TOPO),
        "core",
        case["states"],
        old_primary=case.get("old_primary", "eu-1"),
        exclude_regions=case.get("exclude_regions", frozenset()),
        allowed_zones=case.get("allowed_zones"),
    )
    assert isinstance(decision, PromotionDecision)
    assert decision.candidate == case["want"]
    assert_mentions(decision.reason, *case["mentions"])
    ranked = [r for r in decision.ranking if r.eligible]
    if case["want"] is None:
        assert decision.candidate_lsn is None and not ranked
    else:
        assert ranked[0].node == case["want"] and ranked[0].rank == 1
        assert decision.candidate_lsn == ranked[0].lsn


def test_ranking_lists_every_node_eligible_first_then_by_name() -> None:
    decision = choose_promotion_candidate(
        make_topology({"apac-1": 90}),
        "core",
        states(
            down("eu-1"),
            replica("us-1", replay="0/5000000"),
            replica("apac-1", replay="0/5000000"),
            replica("ghost-1"),
        ),
        old_primary="eu-1",
    )
    rows = [(r.node, r.rank, r.eligible, r.priority, str(r.lsn) if r.lsn else None) for r in decision.ranking]
    assert rows == [
        ("apac-1", 1, True, 90, "0/5000000"),
        ("us-1", 2, True, 90, "0/5000000"),
        ("eu-1", None, False, 100, None),
        ("ghost-1", None, False, None, "0/5000000"),
    ]
    by_node = {r.node: r for r in decision.ranking}
    assert by_node["us-1"].why == "reachable replica in region us with the cluster's system identifier"
    assert by_node["us-1"].region == "us" and by_node["us-1"].lsn_source == "replay"


def test_promotion_is_independent_of_input_order() -> None:
    nodes = [down("eu-1"), replica("us-1"), replica("apac-1"), replica("us-9")]
    forward = choose_promotion_candidate(TOPO, "core", states(*nodes), old_primary="eu-1")
    backward = choose_promotion_candidate(TOPO, "core", states(*reversed(nodes)), old_primary="eu-1")
    assert forward == backward


def test_promotion_unknown_cluster_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown cluster 'nope'"):
        choose_promotion_candidate(TOPO, "nope", {}, old_primary=None)


# --- decide_repair ------------------------------------------------------------------

BOUND = 1024
REPAIR_CASES: list[tuple[str, dict[str, Any]]] = [
    # nothing
    (
        "nothing-streaming-right-sender-small-lag",
        dict(
            replica=replica("us-1", replay="0/4FFFF00"),
            want="nothing",
            lag=256,
            mentions=[
                "us-1 is healthy",
                "streaming from db-eu-1:5432",
                "timeline 1",
                "256 bytes behind eu-1",
                "bound 1024 bytes (1.0 KiB)",
            ],
        ),
    ),
    (
        "nothing-at-exactly-the-bound",
        dict(replica=replica("us-1", replay="0/4FFFC00"), want="nothing", lag=1024, mentions=["is healthy"]),
    ),
    (
        "nothing-host-compared-case-and-dot-insensitively",
        dict(replica=replica("us-1", sender=("DB-EU-1.", 5432)), want="nothing", lag=0, mentions=["is healthy"]),
    ),
    (
        "nothing-receiver-without-port-judged-by-host",
        dict(replica=replica("us-1", sender=("db-eu-1", None)), want="nothing", lag=0, mentions=["is healthy"]),
    ),
    (
        "nothing-sender-unchecked-without-expected-endpoint",
        dict(
            replica=replica("us-1", sender=("anything", 5999)),
            endpoint=None,
            want="nothing",
            lag=0,
            mentions=["anything:5999 (sender not checked)"],
        ),
    ),
    (
        "nothing-apparent-lead-while-streaming-is-an-observation-race",
        dict(
            replica=replica("us-1", replay="0/5000180", receive="0/5000200"),
            primary=primary(lsn="0/5000100"),
            want="nothing",
            lag=0,
            mentions=["0 bytes behind eu-1"],
        ),
    ),
    (
        "nothing-node-is-the-primary",
        dict(replica=primary("eu-1"), want="nothing", mentions=["eu-1 is the primary itself"]),
    ),
    # wait
    (
        "wait-lagging",
        dict(
            replica=replica("us-1", replay="0/4000000"),
            want="wait",
            lag=16 * 1024 * 1024,
            mentions=["streams from db-eu-1:5432", "16777216 bytes (16.0 MiB) behind eu-1", "let it catch up"],
        ),
    ),
    (
        "wait-lagging-with-paused-replay",
        dict(
            replica=replica("us-1", replay="0/4000000", paused=True),
            want="wait",
            lag=16 * 1024 * 1024,
            mentions=["WAL replay is paused on it"],
        ),
    ),
    (
        "wait-no-primary",
        dict(replica=replica("us-1"), primary=None, want="wait", mentions=["there is no primary to follow"]),
    ),
    (
        "wait-primary-unreachable",
        dict(
            replica=replica("us-1"),
            primary=down("eu-1", "timeout"),
            data_dir=False,
            want="wait",
            mentions=["the primary eu-1 is unreachable (timeout)"],
        ),
    ),
    (
        "wait-primary-is-not-a-primary",
        dict(
            replica=replica("us-1"),
            primary=replica("eu-1"),
            want="wait",
            mentions=["eu-1 is not a primary (role replica)"],
        ),
    ),
    (
        "wait-lag-unknown",
        dict(
            replica=replica("us-1", replay=None, receive="0/5000000"),
            want="wait",
            mentions=["its lag is unknown (replay LSN None"],
        ),
    ),
    (
        "wait-role-unknown",
        dict(
            replica=NodeState(node="us-1", reachable=True, role="unknown", observed_at=NOW),
            want="wait",
            mentions=["its role is unknown"],
        ),
    ),
    # repoint
    (
        "repoint-streaming-from-old-primary",
        dict(
            replica=replica("apac-1", sender=EU_EP, timeline=2),
            primary=primary("us-1", timeline=2),
            endpoint=US_EP,
            want="repoint",
            mentions=[
                "apac-1 streams from db-eu-1:5432 but the primary us-1 is db-us-1:5432",
                "on the primary's timeline 2",
                "not ahead of the primary's 0/5000000",
                "pointing primary_conninfo at db-us-1:5432",
            ],
        ),
    ),
    (
        "repoint-wrong-port",
        dict(
            replica=replica("us-1", sender=("db-eu-1", 5433)),
            want="repoint",
            mentions=["streams from db-eu-1:5433 but the primary eu-1 is db-eu-1:5432"],
        ),
    ),
    (
        "repoint-no-wal-receiver",
        dict(
            replica=replica("us-1", status=None),
            want="repoint",
            mentions=["us-1 is not streaming: it has no WAL receiver", "the primary eu-1 (db-eu-1:5432)"],
        ),
    ),
    (
        "repoint-receiver-not-streaming",
        dict(
            replica=replica("us-1", status="waiting", sender=("db-old", 5432)),
            want="repoint",
            mentions=["its WAL receiver is waiting (configured for db-old:5432)"],
        ),
    ),
    (
        "repoint-unknown-timeline",
        dict(replica=replica("us-1", status=None, timeline=None), want="repoint", mentions=["its timeline is unknown"]),
    ),
    (
        "repoint-means-start-when-down-and-intact",
        dict(
            replica=down("us-1", "connection refused"),
            want="repoint",
            start=True,
            mentions=[
                "us-1 is down (connection refused)",
                "data directory intact",
                "start it as a replica of the primary eu-1 (db-eu-1:5432)",
            ],
        ),
    ),
    # rewind
    (
        "rewind-second-primary",
        dict(
            replica=primary("eu-1", lsn="0/5000100", timeline=1),
            primary=primary("us-1", timeline=2),
            endpoint=US_EP,
            want="rewind",
            mentions=[
                "eu-1 is a second primary (timeline 1 at 0/5000100)",
                "us-1 is the primary on timeline 2",
                "pg_rewind it from the primary us-1 (db-us-1:5432)",
            ],
        ),
    ),
    (
        "rewind-older-timeline",
        dict(
            replica=replica("apac-1", timeline=1, status=None),
            primary=primary("us-1", timeline=2),
            endpoint=US_EP,
            want="rewind",
            mentions=["apac-1 is on timeline 1, older than the primary us-1's timeline 2", "pg_rewind"],
        ),
    ),
    (
        "rewind-newer-timeline",
        dict(
            replica=replica("us-1", timeline=3),
            primary=primary("eu-1", timeline=2),
            want="rewind",
            mentions=["us-1 is on timeline 3, newer than the primary eu-1's timeline 2"],
        ),
    ),
    (
        "rewind-ahead-on-same-timeline-when-not-streaming",
        dict(
            replica=replica("us-1", replay="0/5000100", status=None),
            primary=primary(lsn="0/5000000"),
            want="rewind",
            mentions=["holds WAL up to 0/5000100, 256 bytes past the primary eu-1's 0/5000000"],
        ),
    ),
    (
        "rewind-down-node-known-diverged",
        dict(
            replica=down("eu-1", role="primary", timeline=1, current_lsn="0/5000100"),
            primary=primary("us-1", timeline=2),
            endpoint=US_EP,
            want="rewind",
            mentions=["eu-1 is a second primary"],
        ),
    ),
    # reclone
    (
        "reclone-data-dir-missing",
        dict(
            replica=replica("us-1"),
            data_dir=False,
            want="reclone",
            mentions=["us-1's data directory is missing", "reclone it from the primary eu-1 (db-eu-1:5432)"],
        ),
    ),
    (
        "reclone-down-and-data-dir-missing",
        dict(replica=down("us-1"), data_dir=False, want="reclone", mentions=["data directory is missing"]),
    ),
    (
        "reclone-other-system-identifier",
        dict(
            replica=replica("us-1", sysid=OTHER_SYSID),
            want="reclone",
            mentions=[f"system identifier {OTHER_SYSID} but eu-1 has {SYSID}", "different cluster's data"],
        ),
    ),
    (
        "reclone-diverged-but-rewind-impossible",
        dict(
            replica=primary("eu-1", timeline=1),
            primary=primary("us-1", timeline=2),
            endpoint=US_EP,
            rewind_possible=False,
            want="reclone",
            mentions=["eu-1 is a second primary", "pg_rewind is not possible for it, so reclone it"],
        ),
    ),
    (
        "reclone-down-diverged-rewind-impossible",
        dict(
            replica=down("apac-1", role="replica", timeline=1),
            primary=primary("us-1", timeline=2),
            endpoint=US_EP,
            rewind_possible=False,
            want="reclone",
            mentions=["older than the primary us-1's timeline 2", "pg_rewind is not possible"],
        ),
    ),
]


@pytest.mark.parametrize("case", [c for _, c in REPAIR_CASES], ids=[i for i, _ in REPAIR_CASES])
def test_decide_repair(case: dict[str, Any]) -> None:
    decision = decide_repair(
        case["replica"],
        case.get("primary", primary()),
        expected_primary_endpoint=case.get("endpoint", EU_EP),
        data_dir_exists=case.get("data_dir", True),
        max_lag_bytes=BOUND,
        rewind_possible=case.get("rewind_possible", True),
    )
    assert isinstance(decision, RepairDecision)
    assert decision.action == case["want"], decision.reason
    assert decision.node == case["replica"].node
    assert decision.start_required is case.get("start", False)
    if "lag" in case:
        assert decision.lag_bytes == case["lag"]
    assert_mentions(decision.reason, *case["mentions"])


# --- estimate_data_loss -------------------------------------------------------------

DATA_LOSS_CASES: list[tuple[str, dict[str, Any]]] = [
    (
        "known-with-rate",
        dict(
            last="0/5000100",
            promoted="0/5000000",
            rate=128.0,
            bytes=256,
            seconds=2.0,
            mentions=[
                "at least 256 bytes of WAL lost",
                "last seen at 0/5000100",
                "promoted at 0/5000000",
                "about 2.0 s of writes at 128 bytes/s",
            ],
        ),
    ),
    (
        "known-without-rate",
        dict(
            last="0/6000000",
            promoted="0/5000000",
            rate=None,
            bytes=16 * 1024 * 1024,
            seconds=None,
            mentions=["16777216 bytes (16.0 MiB)", "duration is unknown without a WAL rate"],
        ),
    ),
    (
        "known-with-zero-rate",
        dict(
            last="0/5000100", promoted="0/5000000", rate=0.0, bytes=256, seconds=None, mentions=["duration is unknown"]
        ),
    ),
    (
        "unknown-old-primary-lsn",
        dict(
            last=None,
            promoted="0/5000000",
            rate=128.0,
            bytes=None,
            seconds=None,
            mentions=["data loss is unknown", "last LSN was never observed", "promoted at 0/5000000"],
        ),
    ),
    (
        "negative-clamped-to-zero",
        dict(
            last="0/5000000",
            promoted="0/5000100",
            rate=128.0,
            bytes=0,
            seconds=0.0,
            mentions=["no data loss visible", "256 bytes past the old primary's last observed LSN 0/5000000", "stale"],
        ),
    ),
    (
        "equal-is-zero",
        dict(
            last="0/5000000",
            promoted="0/5000000",
            rate=None,
            bytes=0,
            seconds=0.0,
            mentions=["no data loss visible", "0/5000000"],
        ),
    ),
]


@pytest.mark.parametrize("case", [c for _, c in DATA_LOSS_CASES], ids=[i for i, _ in DATA_LOSS_CASES])
def test_estimate_data_loss(case: dict[str, Any]) -> None:
    estimate = estimate_data_loss(
        Lsn.parse(case["last"]) if case["last"] else None,
        Lsn.parse(case["promoted"]),
        wal_bytes_per_second=case["rate"],
    )
    assert isinstance(estimate, DataLossEstimate)
    assert (estimate.bytes, estimate.seconds) == (case["bytes"], case["seconds"])
    assert_mentions(estimate.reason, *case["mentions"])


# --- properties of the module -------------------------------------------------------


def test_decisions_are_frozen() -> None:
    decision = estimate_data_loss(None, Lsn.parse("0/1"))
    with pytest.raises(ValidationError):
        decision.bytes = 5  # type: ignore[misc]
    with pytest.raises(ValidationError):
        ProbeOutcome(at=NOW, reachable=True, surprise=1)  # type: ignore[call-arg]


def test_decisions_serialise_lsns_as_text() -> None:
    decision = choose_promotion_candidate(
        TOPO, "core", states(down("eu-1"), replica("us-1"), replica("apac-1")), old_primary="eu-1"
    )
    dumped = decision.model_dump(mode="json")
    assert dumped["candidate_lsn"] == "0/5000000"
    assert PromotionDecision.model_validate(dumped) == decision


DECISIONS_DIR = Path(__file__).resolve().parents[2] / "regionops" / "decisions"


def test_decisions_do_no_io_and_read_no_clock() -> None:
    """Purity guard: no clock, file, network or Prefect use anywhere in the package."""
    forbidden_calls = {"now", "utcnow", "today", "time", "monotonic", "open", "sleep", "connect"}
    forbidden_imports = {"prefect", "psycopg", "boto3", "httpx", "time", "os", "subprocess", "socket"}
    for path in DECISIONS_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                assert name not in forbidden_calls, f"{path.name}:{node.lineno} calls {name}()"
            elif isinstance(node, ast.Import | ast.ImportFrom):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for module in modules:
                    assert module.split(".")[0] not in forbidden_imports, f"{path.name} imports {module}"


def test_importing_decisions_does_not_import_prefect() -> None:
    code = "import sys, regionops.decisions; print('prefect' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
