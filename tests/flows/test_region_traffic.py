"""Application traffic and release targets against moto's server (Route53, ECS) and the lab's apps."""

from __future__ import annotations

import sys
import uuid

import pytest

from flows.region_traffic import RegionTrafficParams, region_traffic
from regionops import routing
from regionops.drivers.aws import service_client
from regionops.drivers.deploy import CommandTarget, EcsTarget
from regionops.drivers.traffic import traffic_for
from regionops.errors import ExternalSystemError, TransientError
from regionops.topology import parse_topology
from tests import labtools

pytestmark = pytest.mark.lab


def record_sets(topo) -> list[str]:
    """Every record set of the zone, as comparable sentences."""
    return sorted(r.sentence() for r in traffic_for(topo).list_record_sets(topo.traffic.route53_zone))


def traffic_params(lab, **kw) -> RegionTrafficParams:
    return RegionTrafficParams(topology=str(lab.cfg.topology_path), load_window_seconds=0.5, **kw)


def test_the_lab_has_one_health_checked_latency_record_per_region(topology):
    state = routing.read_state(topology)
    assert sorted(state.serving) == ["apac", "eu", "us"] and state.drained == {}
    for region, record in state.serving.items():
        assert record.region == topology.regions[region].aws_region and record.health_check_id
        assert record.set_identifier == region


def test_drain_and_restore_leave_the_record_set_as_it_was(lab, topology):
    before = record_sets(topology)
    drained = region_traffic(traffic_params(lab, region="us", action="drain", reason="test drain"))
    assert drained.serving_after == ["apac", "eu"] and "healthy" in drained.decision.reason
    state = routing.read_state(topology)
    assert "us" not in state.serving and "test drain" in state.drained["us"]
    # The lab's `up` (ensure) leaves a drained region drained.
    routing.ensure_app_traffic(topology)
    assert "us" not in routing.read_state(topology).serving
    restored = region_traffic(traffic_params(lab, region="us", action="restore"))
    assert restored.serving_after == ["apac", "eu", "us"]
    assert record_sets(topology) == before


def test_draining_while_another_region_is_unhealthy_is_refused_with_the_reason(lab, topology):
    before = record_sets(topology)
    with labtools.process_stopped(lab, "app-apac"):
        state = region_traffic(traffic_params(lab, region="eu", action="drain"), return_state=True)
        assert state.is_failed()
        with pytest.raises(Exception, match="apac is unhealthy") as err:
            state.result()
        assert "drain of eu refused" in str(err.value) and "nothing was changed" in str(err.value)
    assert record_sets(topology) == before


def test_draining_the_last_serving_region_is_refused_and_an_unknown_region_is_named(lab, topology):
    from regionops.decisions.traffic import decide_drain

    assert not decide_drain("eu", ["eu"], {}, {"eu": 1.0}, {}).allowed
    with pytest.raises(Exception, match="parameter region: unknown region 'mars'"):
        region_traffic(traffic_params(lab, region="mars"))


def test_failover_drain_happens_only_when_the_topology_asks(lab, topology):
    assert routing.drain_for_lost_database(topology, "apac", "test") is None  # the lab's default: off
    data = topology.model_dump(mode="json", exclude_none=True)
    data["application"]["traffic"]["drain_on_database_loss"] = True
    asking = parse_topology(data)
    before = record_sets(topology)
    try:
        change = routing.drain_for_lost_database(asking, "apac", "failover test: apac-1 lost")
        assert change.changed and "apac" not in routing.read_state(asking).serving
    finally:
        routing.restore(asking, "apac")
    assert record_sets(topology) == before


# --- release targets other than the lab --------------------------------------------------------


def ecs_topology(topology):
    data = topology.model_dump(mode="json", exclude_none=True)
    suffix = uuid.uuid4().hex[:6]
    data["application"]["release"] = {
        "target": "ecs",
        "ecs": {
            "cluster": f"web-{suffix}",
            "service": "web-{region}",
            "container": "web",
            "image": "registry.example.com/web:{version}",
            "stable_timeout_seconds": 10,
        },
    }
    return parse_topology(data)


def test_ecs_target_registers_a_revision_waits_until_stable_and_returns_to_the_exact_previous_one(topology):
    topo = ecs_topology(topology)
    ecs = service_client(topo, "ecs", "eu-west-1")
    cluster = topo.application.release.ecs.cluster
    ecs.create_cluster(clusterName=cluster)
    first = ecs.register_task_definition(
        family="web-eu",
        containerDefinitions=[
            {"name": "web", "image": "registry.example.com/web:1.0.0", "memory": 128},
            {"name": "sidecar", "image": "envoy:1.30", "memory": 64},
        ],
    )["taskDefinition"]["taskDefinitionArn"]
    ecs.create_service(cluster=cluster, serviceName="web-eu", taskDefinition=first, desiredCount=0)
    target = EcsTarget(topo, poll_interval=0.2)

    before = target.current("eu")
    assert before.version == "1.0.0" and before.ref == first
    deployed = target.deploy("eu", "1.1.0")
    assert deployed.ref != first and target.current("eu").version == "1.1.0"
    revision = ecs.describe_task_definition(taskDefinition=deployed.ref)["taskDefinition"]
    assert {c["name"]: c["image"] for c in revision["containerDefinitions"]} == {
        "web": "registry.example.com/web:1.1.0",
        "sidecar": "envoy:1.30",
    }
    # Rollback goes back to the recorded task definition itself, not a rebuilt copy.
    target.deploy("eu", before.version, before.ref)
    assert target.current("eu").ref == first
    with pytest.raises(ExternalSystemError, match="web-us in us: ClusterNotFoundException"):
        target.current("us")


def command_topology(topology, tmp_path, deploy: str, timeout: float = 10):
    data = topology.model_dump(mode="json", exclude_none=True)
    data["application"]["release"] = {
        "target": "command",
        "command": {
            "deploy": deploy,
            "current_version": f"cat {tmp_path}/{{region}}.version 2>/dev/null || echo none",
            "timeout_seconds": timeout,
        },
    }
    return parse_topology(data)


def test_command_target_runs_the_templated_command_quotes_values_and_keeps_its_output(topology, tmp_path):
    deploy = f"echo deploying {{version}} to {{aws_region}}; printf %s {{version}} > {tmp_path}/{{region}}.version"
    target = CommandTarget(command_topology(topology, tmp_path, deploy))
    assert target.current("us").version == "none"
    result = target.deploy("us", "1.2.0")
    assert "deploying 1.2.0 to us-east-1" in result.output
    assert target.current("us").version == "1.2.0"
    # A version cannot inject shell: it is quoted as one word.
    target.deploy("us", "1.2.0;touch-injected")
    assert not (tmp_path / "touch-injected").exists() and target.current("us").version == "1.2.0;touch-injected"


def test_command_target_kills_a_command_past_its_timeout_and_reports_a_failing_one(topology, tmp_path):
    slow = CommandTarget(
        command_topology(
            topology, tmp_path, f"echo started; {sys.executable} -c 'import time; time.sleep(30)'", timeout=1
        )
    )
    with pytest.raises(TransientError, match="timed out after 1 s .*started"):
        slow.deploy("eu", "1.0.1")
    failing = CommandTarget(command_topology(topology, tmp_path, "echo no such cluster >&2; exit 3"))
    with pytest.raises(ExternalSystemError, match="exited 3; output: no such cluster"):
        failing.deploy("eu", "1.0.1")
