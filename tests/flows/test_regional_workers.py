"""Runbooks across regions: node steps on the node's region's executor, runbooks on region pools.

The session lab runs one node-step executor per region (``regionops executor --region
R``, each with only its REGIONOPS_REGION) and, for this module, one process worker per
region pool.  This module's cluster is a private one; its topology, like every lab
topology, says ``node_operator: regional``.  The failover runs on the US pool (through
its deployment); its node steps on eu-1 are task runs of the failover's flow run, run by
the EU executor.  Everything is asserted through the Prefect API (task runs, their
parents, the region that ran each step) and the cluster itself (roles, the writer
record, data directories).
"""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pytest
import yaml
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterTags
from prefect.client.schemas.objects import TaskRun
from prefect.deployments import run_deployment

from flows.replica_resync import ResyncParams, replica_resync
from flows.restore import RestoreParams, restore
from flows.switchover import SwitchoverParams, switchover
from regionops.errors import NodeStepFailed
from regionops.lab import pglab
from regionops.lab.config import LAB_NODES
from regionops.node.executor import node_step_task
from regionops.node.messages import NodeOpParams, NodeOpReply
from regionops.topology import load_topology
from regionops.waiting import poll_until
from tests import ha_tools as ha
from tests.pgbackrest_tools import take_backup

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def workers(lab):
    """The session lab's work pools, deployments and one worker per region (stopped with the lab)."""
    lab.workers.start()
    yield lab.workers


@pytest.fixture(scope="module")
def regional(workers, lab):
    """A private cluster (node steps through the session lab's executors); its topology file path."""
    with ha.private_cluster() as cluster:
        doc = yaml.safe_load(cluster.cfg.topology_path.read_text())
        assert doc["clusters"]["core"]["node_operator"] == "regional"
        doc["prefect"] = {"ui_url": f"http://127.0.0.1:{lab.cfg.ports.prefect}", "node_pickup_seconds": 15}
        path = cluster.cfg.lab_dir / "topology-regional.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        load_topology(path)  # valid
        yield cluster, path


def params(path: Path, **kw) -> dict:
    return {"topology": str(path), "lock_wait_seconds": 15, **kw}


def node_steps(parent: UUID) -> list[TaskRun]:
    """The node steps a flow run submitted (task runs of that flow run tagged node-step), oldest first."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[parent])),
            task_run_filter=TaskRunFilter(tags=TaskRunFilterTags(all_=["node-step"])),
        )
    return sorted(runs, key=lambda r: r.created or r.expected_start_time)


def assert_on_executors(runs: list[TaskRun], parent: UUID) -> dict[str, list[str]]:
    """Every step ran on its node's region's executor, completed, under ``parent``; returns node -> step names."""
    assert runs, "no node step ran"
    steps: dict[str, list[str]] = {}
    for run in runs:
        assert run.flow_run_id == parent
        assert run.state is not None and run.state.is_completed(), (run.name, run.state)
        reply = run.state.result()
        assert isinstance(reply, NodeOpReply)
        node = next(t.removeprefix("node:") for t in run.tags if t.startswith("node:"))
        assert reply.node == node and reply.worker_region == LAB_NODES[node], (run.name, reply.worker_region)
        assert run.name == f"{reply.operation} {node}"
        steps.setdefault(node, []).append(reply.operation)
    return steps


def test_a_node_step_on_the_wrong_regions_worker_refuses_and_changes_nothing(regional):
    cluster, path = regional
    data = cluster.cfg.data_dir("eu-1")
    before = sorted(p.name for p in data.iterdir())
    pid = pglab.pgctl(cluster.cfg, "eu-1").postmaster_pid()
    step = NodeOpParams(topology=load_topology(path), cluster="core", node="eu-1", operation="stop", mode="immediate")
    # Sent to the US executor on purpose (a misrouted step): it must refuse, not stop eu-1.
    future = node_step_task("us").apply_async(kwargs={"params": step})
    future.wait(timeout=60)
    state = future.state
    assert state.is_failed(), state
    assert "this worker runs in region us, but eu-1 is in eu" in (state.message or "")
    assert "nothing was changed" in (state.message or "")
    assert pglab.pgctl(cluster.cfg, "eu-1").postmaster_pid() == pid
    assert sorted(p.name for p in data.iterdir()) == before
    assert ha.layout(cluster)["eu-1"] == "primary"


def test_pgbackrest_through_the_seam_runs_on_the_nodes_executor_with_its_own_configuration(regional):
    from prefect.client.schemas.filters import TaskRunFilterName

    from regionops.node import node_operator_for
    from regionops.node.pgbackrest_step import seam_driver

    cluster, path = regional
    topo = load_topology(path)
    info = seam_driver(topo, "core", "apac-1", node_operator_for(topo, "core")).info()
    assert info.stanza == "core" and [r.repo for r in info.repos] == [1, 2], info.sentence()
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=["pgbackrest apac-1"])))
    assert runs and all(r.state.is_completed() for r in runs)
    assert {r.state.result().worker_region for r in runs} == {"apac"}


def test_a_refused_node_step_keeps_its_error_type_and_names_the_step_and_its_link(regional):
    from regionops.errors import PreconditionFailed
    from regionops.node import node_operator_for

    cluster, path = regional
    operator = node_operator_for(load_topology(path), "core")
    with pytest.raises(PreconditionFailed) as err:
        operator.rewind("eu-1", "us-1")  # refused on the EU executor: eu-1 runs
    message = str(err.value)
    assert message.startswith("cannot rewind eu-1 while it runs")
    assert "(node step rewind of eu-1 (region eu) on the eu executor: " in message and "/runs/task-run/" in message
    cause = err.value.__cause__
    assert isinstance(cause, NodeStepFailed) and cause.run_url and cause.run_url in message
    assert ha.layout(cluster)["eu-1"] == "primary"


def test_a_gone_executor_stops_the_switchover_with_a_named_error_and_no_second_primary(regional, lab):
    cluster, path = regional
    lab.executors.stop_region("eu")
    try:
        state = switchover(SwitchoverParams(**params(path, target="us-1")), return_state=True)
        assert state.is_failed()
        with pytest.raises(NodeStepFailed) as err:
            state.result()
        message = str(err.value)
        assert "node step stop of eu-1 (region eu)" in message
        assert "no executor of region eu picked it up within 15 s" in message and "/runs/task-run/" in message
    finally:
        lab.executors.start(regions=["eu"])
    # Rolled back over SQL: eu-1 is still the one primary and takes writes; the writer did not move.
    shape = ha.expect_layout(cluster, "eu-1", timeout=20)
    assert list(shape.values()).count("primary") == 1
    assert ha.writer(cluster) == "eu-1"
    assert ha.write_rows(cluster, 1)
    (step,) = node_steps(ha.run_id(state))
    assert "node:eu-1" in step.tags and step.state.is_cancelled()
    # It cannot stop eu-1 later: the EU executor is back and has served a later step (steps
    # are delivered in order, so it was offered the cancelled one first), which stays cancelled.
    from regionops.node import node_operator_for

    assert node_operator_for(load_topology(path), "core").is_running("eu-1")
    with get_client(sync_client=True) as client:
        assert client.read_task_run(step.id).state.is_cancelled()
    assert ha.layout(cluster)["eu-1"] == "primary"


def test_a_switchover_runs_the_old_primarys_steps_on_its_regions_executor_and_back(regional):
    cluster, path = regional
    ha.expect_layout(cluster, "eu-1", timeout=20)
    ids = ha.write_rows(cluster, 3)
    state = switchover(SwitchoverParams(**params(path, target="us-1")), return_state=True)
    assert state.is_completed(), state
    steps = assert_on_executors(node_steps(ha.run_id(state)), ha.run_id(state))
    # Only the demoted primary's host was needed: the target is promoted and re-pointed over SQL.
    assert set(steps) == {"eu-1"}
    assert {"stop", "configure-standby", "start"} <= set(steps["eu-1"])
    ha.expect_layout(cluster, "us-1", timeout=30)
    assert ha.writer(cluster) == "us-1"
    assert set(ids) <= ha.row_ids(cluster, "us-1")

    # And back: now us-1's steps run on the US executor.
    back = switchover(SwitchoverParams(**params(path, target="eu-1")), return_state=True)
    assert back.is_completed(), back
    steps = assert_on_executors(node_steps(ha.run_id(back)), ha.run_id(back))
    assert set(steps) == {"us-1"} and "stop" in steps["us-1"]
    ha.expect_layout(cluster, "eu-1", timeout=30)
    assert ha.writer(cluster) == "eu-1"
    assert ha.write_rows(cluster, 1)


def test_failover_on_the_us_pool_runs_eu_steps_on_the_eu_executor_then_resync_reclones_there(regional):
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
    steps = assert_on_executors(node_steps(run.id), run.id)
    assert set(steps) == {"eu-1"}  # promotion and re-pointing are SQL: no other node's host was needed
    assert "fence-on-host" in steps["eu-1"]  # stop if running + standby.signal: one round trip
    shape = ha.layout(cluster)
    assert shape["us-1"] == "primary" and list(shape.values()).count("primary") == 1
    assert ha.writer(cluster) == "us-1"
    assert (cluster.cfg.data_dir("eu-1") / "standby.signal").exists()

    # eu-1's disk is lost: resync re-clones it, on the EU executor.
    data = cluster.cfg.data_dir("eu-1")
    lost = data.with_name("eu-1.lost-by-test")
    data.rename(lost)
    resync = replica_resync(ResyncParams(**params(path, node="eu-1")), return_state=True)
    assert resync.is_completed(), resync
    result = resync.result()
    assert [d.action for d in result.repairs[0].decisions][-1] == "reclone"
    steps = assert_on_executors(node_steps(ha.run_id(resync)), ha.run_id(resync))
    assert "reclone" in steps["eu-1"] and "start" in steps["eu-1"]
    poll_until(lambda: ha.streams_from(cluster, "eu-1", "us-1"), timeout=30, what="eu-1 streaming from us-1")

    # The module's cluster is discarded afterwards: no switchover back (its node steps are
    # dispatched the same way; the gone-executor test shows its first one for the EU executor).


def test_restore_of_a_replica_runs_its_disk_steps_on_the_nodes_executor(regional):
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
    steps = assert_on_executors(node_steps(ha.run_id(state)), ha.run_id(state))
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


def test_a_step_is_claimed_once_and_never_after_it_was_cancelled(lab, topology):
    """The claim every executor makes before it runs a step: the server grants it once."""
    from prefect.states import Cancelled

    from regionops.node.executor import claim_sync

    step = NodeOpParams(topology=topology, cluster="core", node="eu-1", operation="is-running")
    with get_client(sync_client=True) as client:
        # A region no executor serves: nothing else claims these steps.
        first = node_step_task("nowhere").apply_async(kwargs={"params": step})
        assert claim_sync(client, first.task_run_id)
        assert not claim_sync(client, first.task_run_id)  # a second executor, or a redelivery
        second = node_step_task("nowhere").apply_async(kwargs={"params": step})
        assert claim_sync(client, second.task_run_id)  # the caller's claim, before it cancels
        client.set_task_run_state(second.task_run_id, Cancelled(message="test"), force=True)
        assert not claim_sync(client, second.task_run_id)  # an executor that comes back later
        assert client.read_task_run(second.task_run_id).state.is_cancelled()
