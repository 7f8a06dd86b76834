"""Runbooks across regional workers: node steps as child runs on the node's region pool.

The session lab's Prefect server runs one process worker per region pool
(``regionops-eu``, ``-us``, ``-apac``, each with only its REGIONOPS_REGION); this module's
cluster is a private one whose topology says ``node_operator: regional``.  The failover
runs on the US pool (through its deployment); its node steps on eu-1 are child runs on
the EU pool.  Everything is asserted through the Prefect API (runs, pools, parents) and
the cluster itself (roles, the writer record, data directories).
"""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pytest
import yaml
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from flows.replica_resync import ResyncParams, replica_resync
from flows.restore import RestoreParams, restore
from flows.switchover import SwitchoverParams, switchover
from regionops.errors import NodeStepFailed
from regionops.lab import pglab
from regionops.node.messages import NodeOpParams
from regionops.topology import load_topology
from regionops.waiting import poll_until
from tests import ha_tools as ha
from tests.pgbackrest_tools import take_backup

pytestmark = pytest.mark.lab

POOL = {"eu-1": "regionops-eu", "us-1": "regionops-us", "apac-1": "regionops-apac"}


@pytest.fixture(scope="module")
def workers(lab):
    """The session lab's work pools, deployments and one worker per region (stopped with the lab)."""
    lab.workers.start()
    yield lab.workers


@pytest.fixture(scope="module")
def regional(workers, lab):
    """A private cluster whose node steps go through the regional workers; its topology file path."""
    with ha.private_cluster() as cluster:
        doc = yaml.safe_load(cluster.cfg.topology_path.read_text())
        doc["clusters"]["core"]["node_operator"] = "regional"
        doc["prefect"] = {"ui_url": f"http://127.0.0.1:{lab.cfg.ports.prefect}", "node_pickup_seconds": 15}
        path = cluster.cfg.lab_dir / "topology-regional.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        load_topology(path)  # valid
        yield cluster, path


def params(path: Path, **kw) -> dict:
    return {"topology": str(path), "lock_wait_seconds": 15, **kw}


def node_runs(parent: UUID) -> list[FlowRun]:
    """The node-operation runs started by a flow run's tasks (its child runs), oldest first."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(operator="and_", any_=[parent])
            )
        )
    return sorted((r for r in runs if "node-operation" in r.tags), key=lambda r: r.created)


def assert_on_pools(runs: list[FlowRun], parent: UUID) -> dict[str, list[str]]:
    """Every child ran on its node's pool, completed, under ``parent``; returns node -> step names."""
    assert runs, "no node step ran as a child run"
    steps: dict[str, list[str]] = {}
    with get_client(sync_client=True) as client:
        for run in runs:
            node = next(t.removeprefix("node:") for t in run.tags if t.startswith("node:"))
            assert run.work_pool_name == POOL[node], (run.name, run.work_pool_name)
            assert run.state is not None and run.state.is_completed(), (run.name, run.state)
            task = client.read_task_run(run.parent_task_run_id)
            assert task.flow_run_id == parent
            steps.setdefault(node, []).append(run.name.split(" ")[0])
    return steps


def test_a_node_step_on_the_wrong_regions_worker_refuses_and_changes_nothing(regional):
    cluster, path = regional
    data = cluster.cfg.data_dir("eu-1")
    before = sorted(p.name for p in data.iterdir())
    pid = pglab.pgctl(cluster.cfg, "eu-1").postmaster_pid()
    step = NodeOpParams(topology=load_topology(path), cluster="core", node="eu-1", operation="stop", mode="immediate")
    run = run_deployment(
        "node-operation/us",
        parameters={"params": step.model_dump(mode="json")},
        timeout=90,
        poll_interval=1,
        as_subflow=False,
    )
    assert run.work_pool_name == "regionops-us" and run.state.is_failed()
    assert "this worker runs in region us, but eu-1 is in eu" in run.state.message
    assert "nothing was changed" in run.state.message
    assert pglab.pgctl(cluster.cfg, "eu-1").postmaster_pid() == pid
    assert sorted(p.name for p in data.iterdir()) == before
    assert ha.layout(cluster)["eu-1"] == "primary"


def test_pgbackrest_through_the_seam_runs_on_the_nodes_pool_with_its_own_configuration(regional):
    from prefect.client.schemas.filters import FlowRunFilterName

    from regionops.node import node_operator_for
    from regionops.node.pgbackrest_step import seam_driver

    cluster, path = regional
    topo = load_topology(path)
    info = seam_driver(topo, "core", "apac-1", node_operator_for(topo, "core")).info()
    assert info.stanza == "core" and [r.repo for r in info.repos] == [1, 2], info.sentence()
    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["pgbackrest apac-1"]))
        )
    assert run.work_pool_name == "regionops-apac" and run.state.is_completed()


def test_a_failing_node_run_is_a_named_error_with_the_child_runs_link(regional):
    from regionops.node import node_operator_for

    cluster, path = regional
    operator = node_operator_for(load_topology(path), "core")
    with pytest.raises(NodeStepFailed) as err:
        operator.rewind("eu-1", "us-1")  # refused on the EU worker: eu-1 runs
    message = str(err.value)
    assert message.startswith("node step rewind of eu-1 (region eu, pool regionops-eu) ended Failed")
    assert "cannot rewind eu-1 while it runs" in message
    assert err.value.run_url and err.value.run_url in message and "/runs/flow-run/" in err.value.run_url
    assert ha.layout(cluster)["eu-1"] == "primary"


def test_a_gone_worker_stops_the_switchover_with_a_named_error_and_no_second_primary(regional, workers):
    cluster, path = regional
    workers.stop_region("eu")
    try:
        state = switchover(SwitchoverParams(**params(path, target="us-1")), return_state=True)
        assert state.is_failed()
        with pytest.raises(NodeStepFailed) as err:
            state.result()
        message = str(err.value)
        assert "node step stop of eu-1 (region eu, pool regionops-eu)" in message
        assert "no worker of pool regionops-eu picked it up" in message and "/runs/flow-run/" in message
    finally:
        workers.start(regions=["eu"], deploy=False)
    # Rolled back over SQL: eu-1 is still the one primary and takes writes; the writer did not move.
    shape = ha.expect_layout(cluster, "eu-1", timeout=20)
    assert list(shape.values()).count("primary") == 1
    assert ha.writer(cluster) == "eu-1"
    assert ha.write_rows(cluster, 1)
    (child,) = node_runs(ha.run_id(state))
    assert child.work_pool_name == "regionops-eu" and child.name == "stop eu-1"
    assert child.state.is_cancelled()  # it cannot stop eu-1 later, when a worker comes back


def test_a_switchover_through_the_workers_runs_the_old_primarys_steps_on_its_pool_and_back(regional):
    cluster, path = regional
    ha.expect_layout(cluster, "eu-1", timeout=20)
    ids = ha.write_rows(cluster, 3)
    state = switchover(SwitchoverParams(**params(path, target="us-1")), return_state=True)
    assert state.is_completed(), state
    steps = assert_on_pools(node_runs(ha.run_id(state)), ha.run_id(state))
    # Only the demoted primary's host was needed: the target is promoted and re-pointed over SQL.
    assert set(steps) == {"eu-1"}
    assert {"stop", "configure-standby", "start"} <= set(steps["eu-1"])
    ha.expect_layout(cluster, "us-1", timeout=30)
    assert ha.writer(cluster) == "us-1"
    assert set(ids) <= ha.row_ids(cluster, "us-1")

    # And back: now us-1's steps run on the US pool.
    back = switchover(SwitchoverParams(**params(path, target="eu-1")), return_state=True)
    assert back.is_completed(), back
    steps = assert_on_pools(node_runs(ha.run_id(back)), ha.run_id(back))
    assert set(steps) == {"us-1"} and "stop" in steps["us-1"]
    ha.expect_layout(cluster, "eu-1", timeout=30)
    assert ha.writer(cluster) == "eu-1"
    assert ha.write_rows(cluster, 1)


def test_failover_on_the_us_pool_runs_eu_steps_on_the_eu_pool_then_resync_reclones_on_the_eu_pool(regional):
    cluster, path = regional
    ha.crash(cluster, "eu-1")
    run = run_deployment(
        "failover/core",
        as_subflow=False,
        timeout=240,
        poll_interval=1,
        parameters={"params": params(path, cluster="core", grace_seconds=1.0, probes=2, probe_timeout_seconds=1)},
    )
    assert run.work_pool_name == "regionops-us"
    assert run.state.is_completed(), run.state
    steps = assert_on_pools(node_runs(run.id), run.id)
    assert set(steps) == {"eu-1"}  # promotion and re-pointing are SQL: no other node's host was needed
    assert "block-primary-start" in steps["eu-1"]
    shape = ha.layout(cluster)
    assert shape["us-1"] == "primary" and list(shape.values()).count("primary") == 1
    assert ha.writer(cluster) == "us-1"
    assert (cluster.cfg.data_dir("eu-1") / "standby.signal").exists()

    # eu-1's disk is lost: resync re-clones it, on the EU worker.
    data = cluster.cfg.data_dir("eu-1")
    lost = data.with_name("eu-1.lost-by-test")
    data.rename(lost)
    resync = replica_resync(ResyncParams(**params(path, node="eu-1")), return_state=True)
    assert resync.is_completed(), resync
    result = resync.result()
    assert [d.action for d in result.repairs[0].decisions][-1] == "reclone"
    steps = assert_on_pools(node_runs(ha.run_id(resync)), ha.run_id(resync))
    assert "reclone" in steps["eu-1"] and "start" in steps["eu-1"]
    poll_until(lambda: ha.streams_from(cluster, "eu-1", "us-1"), timeout=30, what="eu-1 streaming from us-1")

    # The module's cluster is discarded afterwards: no switchover back (its node steps are
    # dispatched the same way; the gone-worker test shows its first one on the EU pool).


def test_restore_of_a_replica_runs_its_disk_steps_on_the_nodes_pool(regional):
    cluster, path = regional
    # Whoever is primary now (us-1 after the failover above); apac-1 is restored from a fresh backup.
    primary = ha.writer(cluster)
    assert primary in ("eu-1", "us-1") and ha.layout(cluster)[primary] == "primary"
    before = ha.write_rows(cluster, 5)
    taken = take_backup(load_topology(str(path)), "core", "full")
    after = ha.write_rows(cluster, 5)  # not in the backup: streamed once apac-1 runs again
    state = restore(
        RestoreParams(
            topology=str(path),
            node="apac-1",
            role="replica",
            require_approval=False,
            notify=False,
            lock_wait_seconds=15,
        ),
        return_state=True,
    )
    assert state.is_completed(), state
    result = state.result()
    assert result.plan.label == taken.label and result.plan.primary == primary
    steps = assert_on_pools(node_runs(ha.run_id(state)), ha.run_id(state))
    assert steps == {"apac-1": ["restore-facts", "restore-stage", "restore-activate"]}
    assert result.verified_at is not None and result.swapped_at is not None and result.verified_at < result.swapped_at
    poll_until(lambda: ha.streams_from(cluster, "apac-1", primary), timeout=30, what=f"apac-1 streaming from {primary}")
    poll_until(
        lambda: set(before + after) <= ha.row_ids(cluster, "apac-1"),
        timeout=30,
        what="apac-1 to have the rows of the backup and those written after it",
    )
    data = cluster.cfg.data_dir("apac-1")
    assert not data.with_name(f"{data.name}.restore-{taken.label}").exists()
    assert not data.with_name(f"{data.name}.pre-restore-{taken.label}").exists()
