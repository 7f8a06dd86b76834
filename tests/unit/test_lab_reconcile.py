"""reconcile_writer and advice_for are pure: observed roles in, the writer decision and advice out."""

from __future__ import annotations

import pytest

from regionops.drivers.postgres import NodeState
from regionops.lab.reconcile import advice_for, reconcile_writer
from regionops.model.probes import DnsRecord
from tests.unit.test_health import APPS, BUCKETS, NOW, assess, primary, replica


def down(name: str) -> NodeState:
    return NodeState(node=name, reachable=False, error="connection refused", observed_at=NOW)


def states(*nodes: NodeState) -> dict[str, NodeState]:
    return {s.node: s for s in nodes}


@pytest.mark.parametrize(
    ("writer", "action", "said"),
    [
        ("us-1", "keep", "writer record already points at the primary us-1"),
        ("eu-1", "point", "writer record now points at the primary us-1 (it pointed at eu-1)"),
        (None, "point", "writer record now points at the primary us-1 (it was missing)"),
    ],
)
def test_one_primary_the_record_follows_it(writer, action, said):
    d = reconcile_writer(states(replica("eu-1"), primary("us-1")), writer)
    assert (d.action, d.primary, d.healthy, d.advice) == (action, "us-1", True, None)
    assert d.sentence() == said


def test_no_primary_leaves_the_record_names_the_nodes_and_says_failover():
    d = reconcile_writer(states(down("eu-1"), replica("us-1", status="connecting")), "eu-1", fenced=())
    assert (d.action, d.primary, d.healthy) == ("leave", None, False)
    assert d.reason == "no node is primary (eu-1 is down, us-1 is a replica (not streaming))"
    assert "`regionops run failover`" in d.advice and "replica-resync" in d.advice
    assert d.sentence().startswith("writer record left as it is: no node is primary")


def test_fenced_node_is_named_as_fenced():
    d = reconcile_writer(states(down("eu-1"), primary("us-1")), "us-1", fenced={"eu-1"})
    assert d.action == "keep" and "eu-1 is fenced (left stopped)" in d.reason


def test_split_brain_with_the_record_on_one_primary_says_resync_rewinds_the_other():
    d = reconcile_writer(states(primary("eu-1"), primary("us-1", tl=2)), "eu-1")
    assert (d.action, d.primary, d.healthy) == ("leave", None, False)
    assert "2 nodes are primary at once, split brain (eu-1 is primary, us-1 is primary)" in d.reason
    assert "`regionops run replica-resync` to rewind us-1 onto eu-1" in d.advice


def test_split_brain_with_the_record_elsewhere_asks_for_a_decision():
    d = reconcile_writer(states(primary("eu-1"), primary("us-1", tl=2)), None)
    assert d.action == "leave" and "points at no node" in d.reason
    assert d.advice.startswith("decide whose history to keep")


def test_advice_for_a_healthy_lab_is_empty():
    report = assess([primary(), replica()])
    assert advice_for(report, reconcile_writer(states(primary(), replica()), "eu-1")) == []


def test_advice_for_a_fenced_down_replica_names_resync_and_the_node():
    observed = states(primary("us-1"), down("eu-1"))
    report = assess(
        list(observed.values()), writer=DnsRecord(name="writer.core.z.", type="CNAME", ttl=5, values=["us-1.core.z."])
    )
    advice = advice_for(report, reconcile_writer(observed, "us-1", {"eu-1"}), {"eu-1"})
    assert advice == ["`regionops run replica-resync` to repair eu-1"]


def test_advice_for_split_brain_and_a_dead_app():
    observed = states(primary("eu-1"), primary("us-1", tl=2))
    apps = [APPS[0], APPS[1].model_copy(update={"reachable": False, "status_code": None, "error": "refused"})]
    report = assess(list(observed.values()), apps=apps, buckets=BUCKETS)
    advice = advice_for(report, reconcile_writer(observed, "eu-1"))
    assert advice[0].startswith("2 nodes are primary at once") and "rewind us-1 onto eu-1" in advice[0]
    assert advice[1] == "`regionops lab up` starts every lab process that is not running"


def test_advice_for_a_stopped_lab_is_lab_up_only():
    observed = states(down("eu-1"), down("us-1"))
    report = assess(list(observed.values()))
    assert advice_for(report, reconcile_writer(observed, "eu-1"), stopped=["eu-1", "us-1"]) == [
        "`regionops lab up` starts the lab (every node is stopped)"
    ]


def test_advice_for_a_crashed_primary_offers_lab_up_and_failover():
    observed = states(down("eu-1"), replica("us-1", status="connecting"))
    report = assess(list(observed.values()))
    advice = advice_for(report, reconcile_writer(observed, "eu-1"), stopped=["eu-1"])
    assert advice[0] == "`regionops lab up` starts the stopped node(s) eu-1 as they last ran"
    assert "`regionops run failover`" in advice[1]
