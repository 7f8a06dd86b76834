"""Restore's pure parts: which backup set and target, the plan from the node's facts, what the seam ships."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from regionops.backup.restore import choose_set, plan_restore, target_for
from regionops.drivers.postgres import NodeState, WalReceiver
from regionops.errors import ConfigurationError, PreconditionFailed
from regionops.model.restore import BackupSet, Fingerprint, RestoreDiskFacts, StageRequest, TableCheck
from regionops.node.local import LocalNodeOperator
from regionops.node.messages import NodeOpParams
from regionops.topology import parse_topology

NOW = datetime(2026, 11, 24, 14, 0, 0, tzinfo=UTC)
SETS = [
    BackupSet(
        label="20261124-100000F",
        type="full",
        repo=1,
        stopped=datetime(2026, 11, 24, 10, 0, 30, tzinfo=UTC),
        lsn_stop="0/5000100",
        size=1024**3,
    ),
    BackupSet(
        label="20261124-100000F_20261124-120000I",
        type="incr",
        repo=1,
        stopped=datetime(2026, 11, 24, 12, 0, 30, tzinfo=UTC),
        lsn_stop="0/9000100",
        size=1024**3,
    ),
]
PROOF = {"public.orders": Fingerprint(rows=5, checksum="42")}


def topology():
    return parse_topology(
        {
            "name": "t",
            "regions": {
                r: {
                    "aws_region": "eu-west-1",
                    "residency": "eu",
                    "app_url": f"http://{r}",
                    "bucket": f"b-{r}",
                    "work_pool": r,
                }
                for r in ("eu", "eu2")
            },
            "clusters": {
                "core": {
                    "nodes": {
                        "eu-1": {"region": "eu", "host": "h1", "port": 5432, "data_dir": "/d1", "priority": 100},
                        "eu-2": {"region": "eu2", "host": "h2", "port": 5432, "data_dir": "/d2", "priority": 90},
                    },
                    "writer_record": "w.core.db.example.com",
                    "backup": {"fingerprint_tables": ["public.orders"]},
                }
            },
            "traffic": {"route53_zone": "db.example.com"},
        }
    )


def state(node, role, reachable=True):
    return NodeState(
        node=node,
        reachable=reachable,
        role=role if reachable else "unknown",
        observed_at=NOW,
        error=None if reachable else "down",
        wal_receiver=WalReceiver(status="streaming") if role == "replica" else None,
    )


def disk(**kw):
    return RestoreDiskFacts.model_validate(
        dict(
            node="eu-2",
            data_dir="/d2",
            free_bytes=10 * 1024**3,
            running=False,
            has_data=True,
            sets=[s.model_dump() for s in SETS],
        )
        | kw
    )


def test_the_newest_set_by_default_and_for_a_time_the_newest_that_ended_before_it():
    assert choose_set("core", SETS, 1, None, "proof", None).label == SETS[1].label
    assert choose_set("core", SETS, 1, None, "time", "2026-11-24 11:00:00+00").label == SETS[0].label
    assert choose_set("core", SETS, 1, None, "time", "2026-11-24T14:00:00+01:00").label == SETS[1].label
    assert choose_set("core", SETS, 1, None, "lsn", "0/6000000").label == SETS[0].label


def test_a_missing_set_a_target_before_the_sets_end_and_bad_input_are_refused_by_name():
    with pytest.raises(PreconditionFailed, match="backup set nope does not exist in repo1 of core; sets there: 2026"):
        choose_set("core", SETS, 1, "nope", "proof", None)
    with pytest.raises(
        PreconditionFailed,
        match=f"time 2026-11-24 11:00:00\\+00 is before backup set {SETS[1].label} "
        "ended \\(2026-11-24 12:00:30\\+00\\)",
    ):
        choose_set("core", SETS, 1, SETS[1].label, "time", "2026-11-24 11:00:00+00")
    with pytest.raises(PreconditionFailed, match="is before backup set .* ended \\(0/9000100\\)"):
        choose_set("core", SETS, 1, SETS[1].label, "lsn", "0/6000000")
    with pytest.raises(PreconditionFailed, match="no backup set in repo1 of core ended before time"):
        choose_set("core", SETS, 1, None, "time", "2026-11-24 09:00:00+00")
    with pytest.raises(PreconditionFailed, match="repo2 of core holds no backup set"):
        choose_set("core", [], 2, None, "proof", None)
    with pytest.raises(ConfigurationError, match="has no time zone"):
        choose_set("core", SETS, 1, None, "time", "2026-11-24 11:00:00")
    with pytest.raises(ConfigurationError, match="a name target needs `target`"):
        choose_set("core", SETS, 1, None, "name", None)


def test_the_proof_target_compares_the_fingerprint_and_any_other_counts_rows():
    at_proof = target_for("core", SETS[0], "proof", None, "regionops-core-x", PROOF, ["public.orders"])
    assert (at_proof.type, at_proof.target, at_proof.proof_point) == ("name", "regionops-core-x", True)
    assert (
        at_proof.expected == PROOF
        and at_proof.describe() == f"restore point regionops-core-x (the proof of {SETS[0].label})"
    )
    no_proof = target_for("core", SETS[0], "proof", None, None, {}, ["public.orders"])
    assert (no_proof.type, no_proof.proof_point, no_proof.tables) == ("default", False, ["public.orders"])
    assert no_proof.describe() == "the end of the WAL archive"
    timed = target_for("core", SETS[0], "time", "2026-11-24 11:00:00+00", "regionops-core-x", PROOF, [])
    assert not timed.proof_point and timed.expected == {} and timed.describe() == "time 2026-11-24 11:00:00+00"
    named = target_for("core", SETS[0], "name", "regionops-core-x", "regionops-core-x", PROOF, [])
    assert named.proof_point
    counted = TableCheck(table="t", restored_rows=3, restored_checksum="1")
    assert not counted.compared and counted.matches
    assert not TableCheck(
        table="t", restored_rows=3, restored_checksum="1", expected_rows=4, expected_checksum="1"
    ).matches


def test_restore_plan_takes_the_facts_read_on_the_nodes_host():
    states = {"eu-1": state("eu-1", "primary"), "eu-2": state("eu-2", "replica", reachable=False)}
    target = target_for("core", SETS[1], "default", None, None, {}, [])
    plan = plan_restore(topology(), "core", "eu-2", target, states, disk(running=True))
    assert (plan.role, plan.primary, plan.node_running, plan.node_has_data) == ("replica", "eu-1", True, True)
    assert (plan.staging_dir, plan.old_dir) == (f"/d2.restore-{SETS[1].label}", f"/d2.pre-restore-{SETS[1].label}")
    assert plan.target.type == "immediate"  # a replica stops at the backup's end and streams the rest
    assert "then streaming from eu-1" in plan.sentence() and "into the empty /d2.restore-" in plan.sentence()
    with pytest.raises(PreconditionFailed, match="has 1.0 GiB free; restoring backup .* needs about 1.1 GiB"):
        plan_restore(topology(), "core", "eu-2", target, states, disk(free_bytes=1024**3))
    with pytest.raises(PreconditionFailed, match="split brain"):
        plan_restore(topology(), "core", "eu-2", target, states, disk(), role="primary")
    alone = {"eu-1": state("eu-1", "primary", reachable=False)}
    confirmed = plan_restore(topology(), "core", "eu-2", target, alone, disk(), confirmed_down=["eu-1"])
    assert (confirmed.role, confirmed.target.type) == ("primary", "default")


@pytest.mark.parametrize(
    "case, others, fenced, confirmed, refusal",
    [
        ("another primary answers", {"eu-1": state("eu-1", "primary")}, (), (), "eu-1 is a reachable primary"),
        (
            "another node does not answer",
            {"eu-1": state("eu-1", "primary", reachable=False)},
            (),
            (),
            "eu-1 does not answer (down): it may be a primary we cannot see",
        ),
        ("another node is fenced", {"eu-1": state("eu-1", "replica")}, ("eu-1",), (), "eu-1 is fenced (an old primary"),
        (
            "a node confirmed down answers",
            {"eu-1": state("eu-1", "replica")},
            (),
            ("eu-1",),
            "eu-1 is confirmed down but answers as a replica",
        ),
        (
            "a primary confirmed down still answers",
            {"eu-1": state("eu-1", "primary")},
            (),
            ("eu-1",),
            "eu-1 is a reachable primary",
        ),
    ],
)
def test_a_node_is_restored_as_a_primary_only_when_no_other_node_can_be_one(case, others, fenced, confirmed, refusal):
    target = target_for("core", SETS[1], "default", None, None, {}, [])
    with pytest.raises(PreconditionFailed, match="cannot restore eu-2 as a primary") as refused:
        plan_restore(
            topology(),
            "core",
            "eu-2",
            target,
            others,
            disk(),
            role="primary",
            fenced=set(fenced),
            confirmed_down=confirmed,
        )
    assert refusal in str(refused.value), case
    assert "confirmed_down" in str(refused.value)


def test_a_fenced_node_confirmed_down_or_a_streaming_replica_allows_a_primary_restore():
    target = target_for("core", SETS[1], "default", None, None, {}, [])
    fenced = {"eu-1": state("eu-1", "primary", reachable=False)}
    plan = plan_restore(
        topology(), "core", "eu-2", target, fenced, disk(), role="primary", fenced={"eu-1"}, confirmed_down=["eu-1"]
    )
    assert plan.role == "primary"
    replica = {"eu-1": state("eu-1", "replica")}
    assert plan_restore(topology(), "core", "eu-2", target, replica, disk(), role="primary").role == "primary"
    with pytest.raises(ConfigurationError, match="confirmed_down names eu-9"):
        plan_restore(topology(), "core", "eu-2", target, replica, disk(), role="primary", confirmed_down=["eu-9"])


def test_a_restore_step_refuses_a_plan_for_another_nodes_directory_and_ships_as_json():
    states = {"eu-1": state("eu-1", "primary"), "eu-2": state("eu-2", "replica", reachable=False)}
    target = target_for("core", SETS[0], "proof", None, "rp", PROOF, [])
    plan = plan_restore(topology(), "core", "eu-2", target, states, disk())
    op = LocalNodeOperator(topology(), "core")
    op._require_own_plan("eu-2", plan)  # its own: passes
    with pytest.raises(PreconditionFailed, match="refusing to restore onto eu-1: the plan names eu-2"):
        op._require_own_plan("eu-1", plan)
    moved = plan.model_copy(update={"staging_dir": "/d1"})
    with pytest.raises(PreconditionFailed, match="nothing was changed"):
        op._require_own_plan("eu-2", moved)
    step = NodeOpParams(
        topology=topology(), cluster="core", node="eu-2", operation="restore-stage", stage=StageRequest(plan=plan)
    )
    assert NodeOpParams.model_validate(step.model_dump(mode="json")) == step
