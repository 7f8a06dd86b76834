"""The lab WAN's pure parts: profiles, the addressing plan, the nft ruleset, the lab config's WAN rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from regionops.errors import ConfigurationError
from regionops.lab.config import LabConfig, LabPorts
from regionops.lab.wan import WanPlan, WanState, parse_wan, ruleset


def test_profiles_scale_the_public_round_trips():
    realistic = parse_wan("realistic")
    assert realistic.rtt_ms("eu", "apac") == 239 and realistic.one_way_ms("us", "eu") == 40
    assert parse_wan("scaled:0.1").rtt_ms("us", "apac") == pytest.approx(21.7)
    assert parse_wan("scaled:0").rtt_ms("eu", "us") == 0 and parse_wan("scaled:0").namespaced
    assert parse_wan("realistic").rtt_ms("eu", "eu") == 0
    assert not parse_wan("off").namespaced


@pytest.mark.parametrize("bad", ["fast", "scaled:", "scaled:-1", "scaled:x", ""])
def test_a_bad_profile_is_named(bad):
    with pytest.raises(ConfigurationError, match="expected off, realistic or scaled:F"):
        parse_wan(bad)


def test_the_plan_gives_each_region_its_own_subnet_and_names_fit_the_kernel():
    plan = WanPlan(7)
    assert plan.address("eu") == "10.157.1.2" and plan.gateway("apac") == "10.157.3.1"
    assert plan.region_of("10.157.2.1") == "us" and plan.region_of("10.157.0.1") is None
    assert plan.region_of("192.0.2.1") is None
    assert all(len(plan.host_link(r)) <= 15 and len(plan.ns_link(r)) <= 15 for r in plan.regions)
    with pytest.raises(ConfigurationError):
        WanPlan(50)


def test_the_ruleset_redirects_cross_region_tcp_forwards_nothing_and_cuts_a_partitioned_region_both_ways():
    plan = WanPlan(0)
    healthy = ruleset(plan, 4000, [])
    assert "redirect to :4000" in healthy and 'iifname "ro0h*" drop' in healthy and "10.150.1.0/24 drop" not in healthy
    cut = ruleset(plan, 4000, ["eu"], aws_port=443)
    # eu's packets to the other regions, and the other regions' packets to eu; the host's own answers from eu pass.
    assert 'iifname "ro0h1" ip daddr { 10.150.2.0/24, 10.150.3.0/24, 10.150.4.0/24 } drop' in cut
    assert 'iifname "ro0h*" iifname != "ro0h1" ip daddr 10.150.1.0/24 drop' in cut
    # eu loses the control plane on the backbone too, but not AWS (its own S3 endpoint's storage, Route53).
    assert 'iifname "ro0h1" ip daddr 10.150.0.1 tcp dport != 443 drop' in cut
    # The ops site (the control plane) is cut off by its own partition (an ops outage) from every region.
    ops = ruleset(plan, 4000, ["ops"], aws_port=443)
    assert 'iifname "ro0h4" ip daddr { 10.150.1.0/24, 10.150.2.0/24, 10.150.3.0/24 } drop' in ops
    assert 'iifname "ro0h*" iifname != "ro0h4" ip daddr 10.150.4.0/24 drop' in ops


def test_the_ops_site_is_a_fourth_site_at_its_own_distance_and_names_the_control_plane(tmp_path: Path):
    plan = WanPlan(2)
    assert plan.sites == ("eu", "us", "apac", "ops") and "ops" not in plan.regions
    assert plan.address("ops") == "10.152.4.2" and plan.region_of("10.152.4.2") == "ops"
    realistic = parse_wan("realistic")
    # Outside the three regions, nearest to us: us-east-2's round trips.
    assert realistic.rtt_ms("ops", "us") == 13 and realistic.rtt_ms("eu", "ops") == 87
    assert realistic.rtt_ms("apac", "ops") == 200
    wan = LabConfig(lab_dir=tmp_path, ports=LabPorts.from_base(20000), wan="realistic", wan_index=2)
    assert wan.control_host() == "10.152.4.2" and wan.netns("ops") == "ro2-ops"
    assert wan.ports.prefect in wan.control_ports() and wan.ports.slack in wan.control_ports()
    loopback = LabConfig(lab_dir=tmp_path, ports=LabPorts.from_base(20000))
    assert loopback.control_host() == "127.0.0.1"


def test_the_state_file_round_trips(tmp_path: Path):
    path = tmp_path / "wan.json"
    WanState("scaled:0.5", ["eu"], {"us": {"extra_ms": 100, "loss": 0.1}}, ["eu"]).save(path)
    state = WanState.load(path)
    assert (state.profile, state.partitioned, state.degraded["us"]["loss"], state.down) == (
        "scaled:0.5",
        ["eu"],
        0.1,
        ["eu"],
    )


def test_a_loopback_lab_is_refused_namespaces_in_place_with_the_way_out(tmp_path: Path):
    cfg = LabConfig(lab_dir=tmp_path, ports=LabPorts.from_base(20000))  # a lab made before the WAN: off
    assert cfg.wan == "off" and cfg.wan_plan() is None and cfg.node_host("eu-1") == "127.0.0.1"
    with pytest.raises(ConfigurationError, match="lab down --purge"):
        cfg.change_wan("realistic")
    realistic = LabConfig(lab_dir=tmp_path, ports=LabPorts.from_base(20000), wan="realistic", wan_index=3)
    assert realistic.node_host("apac-1") == "10.153.3.2" and realistic.netns("us") == "ro3-us"
    realistic.change_wan("scaled:0.1")  # delays may change in place
    assert realistic.wan == "scaled:0.1"


def test_regionops_run_names_the_deployment_and_says_where_an_in_process_run_is():
    from types import SimpleNamespace

    from regionops.runbook.remote_run import deployment_name, failure_message, where_this_runs

    assert deployment_name("failover", "lab") == "failover/lab"
    failed = SimpleNamespace(message="Flow run encountered an exception: PreconditionFailed: no", name="Failed")
    assert failure_message(failed, in_process=False) == "PreconditionFailed: no"
    assert where_this_runs().startswith("host ")
