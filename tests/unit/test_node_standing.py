"""The pure "where do I stand" decision every node step makes before it acts."""

from __future__ import annotations

import pytest

from regionops.node.standing import StandingFacts, judge_standing

SYSID = "7300000000000000001"


def facts(**over) -> StandingFacts:
    base = dict(
        node="eu-1",
        node_region="eu",
        node_port=5432,
        worker_region="eu",
        check_region=True,
        data_dir="/var/lib/postgresql/15/main",
        data_dir_exists=True,
        dir_system_identifier=SYSID,
        dir_port=5432,
        cluster_system_identifier=SYSID,
        reported_by="us-1",
    )
    return StandingFacts(**(base | over))


def test_the_right_worker_on_the_right_directory_may_act():
    verdict = judge_standing(facts())
    assert verdict.ok and verdict.reasons == []
    assert verdict.sentence() == "this worker stands where eu-1's steps belong"


@pytest.mark.parametrize(
    "over, reason",
    [
        ({"worker_region": "us"}, "this worker runs in region us, but eu-1 is in eu"),
        ({"worker_region": None}, "this worker has no REGIONOPS_REGION, so it cannot prove it runs in eu"),
        (
            {"dir_system_identifier": "7399999999999999999"},
            "has system identifier 7399999999999999999, but the cluster (us-1) reports 7300000000000000001",
        ),
        ({"dir_system_identifier": None}, "has system identifier unknown"),
        ({"dir_port": 5433}, "is configured for port 5433, not eu-1's port 5432"),
        ({"dir_port": None}, "is configured for port unknown"),
    ],
)
def test_standing_in_the_wrong_place_refuses_and_says_why(over, reason):
    verdict = judge_standing(facts(**over))
    assert not verdict.ok
    assert any(reason in r for r in verdict.reasons), verdict.reasons
    assert verdict.sentence().startswith("refusing to act on eu-1: ") and verdict.sentence().endswith(
        "nothing was changed"
    )


def test_every_reason_is_given_at_once():
    verdict = judge_standing(facts(worker_region="apac", dir_port=5433))
    assert len(verdict.reasons) == 2


def test_a_single_machine_skips_the_region_check_only():
    assert judge_standing(facts(worker_region=None, check_region=False)).ok
    assert not judge_standing(facts(worker_region=None, check_region=False, dir_port=1)).ok


def test_a_missing_data_directory_has_nothing_to_protect_but_the_region_still_counts():
    missing = dict(data_dir_exists=False, dir_system_identifier=None, dir_port=None)
    assert judge_standing(facts(**missing)).ok
    assert not judge_standing(facts(**missing, worker_region="us")).ok


def test_with_no_member_answering_and_no_recorded_identifier_a_step_refuses():
    verdict = judge_standing(facts(cluster_system_identifier=None, reported_by=None))
    assert not verdict.ok
    assert "no system identifier was recorded when it was last seen healthy" in verdict.sentence()
    assert "nothing was changed" in verdict.sentence()
    # a directory that does not exist has nothing to protect: a re-clone may create it
    assert judge_standing(
        facts(cluster_system_identifier=None, data_dir_exists=False, dir_system_identifier=None, dir_port=None)
    ).ok


def test_with_no_member_answering_the_recorded_identifier_decides():
    recorded = facts(reported_by="the record of system identifier ... recorded by region-health")
    assert judge_standing(recorded).ok
    other = judge_standing(facts(reported_by="the record of ...", dir_system_identifier="999"))
    assert not other.ok and "has system identifier 999" in other.sentence()
