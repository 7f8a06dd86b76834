"""prefect.yaml deploys for real: every deployment lands on the lab's Prefect server as declared."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prefect import get_client

pytestmark = pytest.mark.lab
ROOT = Path(__file__).parents[2]


def declared() -> list[dict]:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]


def test_every_entrypoint_is_a_flow_of_the_registry():
    from flows.registry import RUNBOOKS

    flows = {f"{rb.module.replace('.', '/')}.py:{rb.flow}" for rb in RUNBOOKS.values()}
    for dep in declared():
        assert dep["entrypoint"] in flows, dep["entrypoint"]


def test_every_deployment_is_bound_to_a_region_pool_and_node_steps_are_not_deployments():
    from regionops.topology import load_topology

    pools = {r.work_pool for r in load_topology(ROOT / "deployments/topologies/example-aws.yaml").regions.values()}
    assert {d["work_pool"]["name"] for d in declared()} <= pools
    # Node steps go to each region's executor (a task worker), not to a deployment.
    assert not [d for d in declared() if "node" in d["entrypoint"]]


def test_schedules_have_a_slug_and_a_timezone():
    for dep in declared():
        for schedule in dep.get("schedules") or []:
            assert schedule.get("slug") and schedule.get("timezone"), (dep["name"], schedule)


def test_alert_triggers_in_prefect_yaml_match_the_generated_definitions():
    from deployments.triggers import TRIGGERS_YAML

    in_prefect_yaml = yaml.safe_load((ROOT / "prefect.yaml").read_text())["definitions"]["alert_triggers"]
    assert in_prefect_yaml == yaml.safe_load(TRIGGERS_YAML.read_text())["definitions"]["alert_triggers"]
    carriers = [d["entrypoint"] for d in declared() if d.get("triggers")]
    assert sorted(carriers) == ["flows/failover.py:failover", "flows/replica_resync.py:replica_resync"]


def test_prefect_deploy_all_creates_every_deployment(lab):
    env = {**os.environ, "REGIONOPS_HOME": str(ROOT)}
    prefect = str(Path(sys.executable).parent / "prefect")
    pools = {d["work_pool"]["name"] for d in declared()}
    for pool in pools:
        subprocess.run(
            [prefect, "work-pool", "create", pool, "--type", "process", "--overwrite"],
            env=env,
            capture_output=True,
            check=True,
            timeout=60,
        )
    result = subprocess.run(
        [prefect, "--no-prompt", "deploy", "--all"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    with get_client(sync_client=True) as client:
        try:
            created = []
            for dep in declared():
                flow_name = dep["entrypoint"].split(":")[1].replace("_", "-")
                deployment = client.read_deployment_by_name(f"{flow_name}/{dep['name']}")
                created.append(deployment)
                assert deployment.work_pool_name == dep["work_pool"]["name"]
                slugs = {s.slug for s in deployment.schedules}
                assert slugs == {s["slug"] for s in dep.get("schedules") or []}
                # A deployment's triggers become automations owned by it.
                owned = [
                    a
                    for a in client.read_automations()
                    if any(getattr(act, "deployment_id", None) == deployment.id for act in a.actions)
                ]
                assert len(owned) == len(dep.get("triggers") or []), (dep["entrypoint"], owned)
        finally:
            # The lab's served deployments carry the same triggers: leave only those, or
            # one alert would start two runs in later tests.
            for deployment in created:
                client.delete_resource_owned_automations(f"prefect.deployment.{deployment.id}")
                client.delete_deployment(deployment.id)
