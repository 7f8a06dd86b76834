"""Alertmanager payload -> receiver process -> Prefect event -> deployment trigger -> flow run.

Against the lab's real Prefect server (its triggers and actions services evaluate the
automations), with the receiver running as a real process.  Deployments are created
through the Prefect client with the triggers from `deployments.triggers`; no worker
runs them, so a triggered run stays Scheduled, and that run, with the parameters
taken from the event, is the outcome asserted.

The failover and resync flows are the real ones when `flows/registry.py` knows them;
until then, stand-ins with the same names and parameter shape.  Each test uses its
own made-up cluster name, so trigger windows (per cluster) do not interfere, and no
served deployment of the real lab could ever act on these alerts.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import Flow, flow, get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.events.filters import EventFilter, EventIDFilter
from pydantic import BaseModel, Field

from deployments.triggers import check_flow_parameters, deployment_triggers
from regionops.alerting.receiver import ALERTS_PATH
from regionops.errors import ConfigurationError, DeadlineExceeded
from regionops.waiting import poll_until

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
TOKEN = "alert-trigger-test-token"
RUN_DEADLINE = 45  # automations are evaluated asynchronously by the server's services
QUIET_SECONDS = 3  # how long "no further run appears" is watched after a barrier


# -- stand-ins, used only while the real flows do not exist yet ------------------------
class StandInFailoverParams(BaseModel):
    """Same shape as the failover runbook's parameters (the part the trigger fills in)."""

    cluster: str | None = Field(None, description="cluster whose primary is down")
    node: str | None = Field(None, description="node the alert says is down")
    reason: str | None = Field(None, description="what started the run")
    lock_wait_seconds: float = Field(0, ge=0)
    dry_run: bool = Field(False, description="plan only")


class StandInResyncParams(BaseModel):
    cluster: str | None = Field(None, description="cluster of the replica")
    node: str | None = Field(None, description="replica to repair; default all")
    lock_wait_seconds: float = Field(0, ge=0)


@flow(name="failover")
def standin_failover(params: StandInFailoverParams) -> str:
    """Never runs here (no worker): only its deployment's triggered runs are looked at."""
    return f"would fail over {params.cluster}"


@flow(name="replica-resync")
def standin_resync(params: StandInResyncParams) -> str:
    """Never runs here (no worker)."""
    return f"would resync {params.node} of {params.cluster}"


def runbook_flow(name: str, stand_in: Flow) -> tuple[Flow, bool]:
    """The real runbook flow when the registry has it, else the stand-in.  (flow, is_real)"""
    from flows.registry import runbook

    try:
        real, _ = runbook(name).load()
    except (ConfigurationError, ImportError, AttributeError):
        return stand_in, False
    return real, True


# -- the receiver as a process -----------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Receiver:
    """A running `python -m regionops.alerting.receiver` process."""

    state_dir: Path
    token_file: Path
    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Receiver:
        argv = [
            sys.executable,
            "-m",
            "regionops.alerting.receiver",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--token-file",
            str(self.token_file),
            "--state-dir",
            str(self.state_dir),
            "--log-level",
            "INFO",
        ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=REPO, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
        poll_until(self._ready, timeout=60, interval=0.2, what=f"alert receiver on port {self.port}")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"receiver exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
        try:
            return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def post(self, body: Any, token: str | None = TOKEN) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        content = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return httpx.post(self.url + ALERTS_PATH, content=content, headers=headers, timeout=30)


# -- payloads ----------------------------------------------------------------------------
def alert(
    cluster: str,
    name: str = "PostgresPrimaryDown",
    fingerprint: str | None = None,
    node: str = "eu-1",
    status: str = "firing",
    starts: str = "2024-05-01T03:00:00Z",
) -> dict:
    return {
        "status": status,
        "labels": {
            "alertname": name,
            "cluster": cluster,
            "node": node,
            "region": node.split("-")[0],
            "severity": "page",
        },
        "annotations": {"summary": f"{name} on {node} of {cluster}"},
        "startsAt": starts,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": fingerprint or uuid.uuid4().hex[:16],
    }


def notification(*alerts: dict) -> dict:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="PostgresPrimaryDown"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "regionops",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


def new_cluster() -> str:
    return "t" + uuid.uuid4().hex[:10]


# -- deployments and runs -------------------------------------------------------------------
@dataclass
class AlertSetup:
    receiver: Receiver
    deployments: dict[str, uuid.UUID]
    real_flows: dict[str, bool]
    make_receiver: Callable[[str], Receiver]

    def runs(self, intent: str, cluster: str) -> list[FlowRun]:
        """Flow runs of ``intent``'s deployment whose parameters name ``cluster``."""
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[self.deployments[intent]])),
            )
        return [r for r in runs if r.parameters.get("params", {}).get("cluster") == cluster]

    def wait_for_runs(self, intent: str, cluster: str, count: int = 1) -> list[FlowRun]:
        """Wait until ``count`` runs exist; fail if more appear."""

        def enough() -> list[FlowRun] | None:
            found = self.runs(intent, cluster)
            assert len(found) <= count, f"{len(found)} {intent} runs for {cluster}, expected {count}"
            return found if len(found) == count else None

        return poll_until(enough, timeout=RUN_DEADLINE, interval=0.5, what=f"{count} {intent} run(s) for {cluster}")

    def barrier(self) -> None:
        """Every event sent before this has been evaluated: a later event's run exists.

        Then watch a few seconds more, since the server evaluates events two at a time.
        """
        cluster = new_cluster()
        assert self.receiver.post(notification(alert(cluster))).status_code == 200
        self.wait_for_runs("failover", cluster)

    def assert_run_count(self, intent: str, cluster: str, count: int) -> None:
        """After a barrier, exactly ``count`` runs exist and stay so for QUIET_SECONDS."""
        self.barrier()
        try:
            poll_until(
                lambda: len(self.runs(intent, cluster)) != count,
                timeout=QUIET_SECONDS,
                interval=0.5,
                what="the run count to change",
            )
        except DeadlineExceeded:
            return
        raise AssertionError(f"{len(self.runs(intent, cluster))} {intent} runs for {cluster}, expected {count}")


@contextmanager
def deployed(flow_obj: Flow, intent: str) -> Iterator[uuid.UUID]:
    """A deployment of ``flow_obj`` with the alert triggers for ``intent``; removed afterwards."""
    check_flow_parameters(intent, flow_obj)
    deployment = flow_obj.to_deployment(name=f"alert-test-{uuid.uuid4().hex[:8]}", triggers=deployment_triggers(intent))
    deployment_id = deployment.apply()
    try:
        yield deployment_id
    finally:
        with get_client(sync_client=True) as client:
            for run in client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            ):
                client.delete_flow_run(run.id)
            client.delete_resource_owned_automations(f"prefect.deployment.{deployment_id}")
            client.delete_deployment(deployment_id)


@pytest.fixture(scope="module")
def setup(lab, tmp_path_factory) -> Iterator[AlertSetup]:
    base = tmp_path_factory.mktemp("alert-receiver")
    token_file = base / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    receivers: list[Receiver] = []

    def make_receiver(name: str) -> Receiver:
        r = Receiver(state_dir=base / name, token_file=token_file, log=base / f"{name}.log").start()
        receivers.append(r)
        return r

    failover_flow, failover_real = runbook_flow("failover", standin_failover)
    resync_flow, resync_real = runbook_flow("replica-resync", standin_resync)
    with deployed(failover_flow, "failover") as failover_id, deployed(resync_flow, "replica-resync") as resync_id:
        try:
            yield AlertSetup(
                receiver=make_receiver("main"),
                deployments={"failover": failover_id, "replica-resync": resync_id},
                real_flows={"failover": failover_real, "replica-resync": resync_real},
                make_receiver=make_receiver,
            )
        finally:
            for r in receivers:
                r.stop()


def outcomes(resp: httpx.Response) -> list[str]:
    return [r["outcome"] for r in resp.json()["results"]]


# -- the acceptance criteria -------------------------------------------------------------------
def test_firing_alert_starts_one_failover_run_with_parameters_from_the_event(setup, record_property):
    record_property("real_runbook_flows", setup.real_flows)
    cluster = new_cluster()
    body = notification(alert(cluster, fingerprint="a1a1a1a1a1a1a1a1"))
    resp = setup.receiver.post(body)
    assert resp.status_code == 200, resp.text
    [result] = resp.json()["results"]
    assert result["outcome"] == "emitted" and result["intent"] == "failover"

    [run] = setup.wait_for_runs("failover", cluster)
    assert run.parameters == {
        "params": {
            "cluster": cluster,
            "node": "eu-1",
            "reason": "alert PostgresPrimaryDown (fingerprint a1a1a1a1a1a1a1a1, firing since 2024-05-01T03:00:00+00:00)",
            "lock_wait_seconds": 1800,
            "page_if_no_failover": True,
        }
    }
    assert run.state is not None and run.state.type == StateType.SCHEDULED
    assert run.deployment_id == setup.deployments["failover"]

    # The event is on the server as sent: the cluster as resource, the fingerprint kept.
    # (The server persists events in batches, after the triggers saw them: wait for it.)
    def stored_events() -> list:
        with get_client(sync_client=True) as client:
            page = client.read_events(EventFilter(id=EventIDFilter(id=[uuid.UUID(result["event_id"])])), limit=10)
        return page.events

    [event] = poll_until(stored_events, timeout=RUN_DEADLINE, interval=0.5, what="the event to be stored")
    assert event.event == "regionops.alert.firing"
    assert event.resource.id == f"regionops.cluster.{cluster}"
    assert event.resource["regionops.node"] == "eu-1"
    assert event.payload["fingerprint"] == "a1a1a1a1a1a1a1a1"
    setup.assert_run_count("failover", cluster, 1)


def test_twenty_copies_of_the_same_payload_start_one_run(setup):
    cluster = new_cluster()
    body = notification(alert(cluster))
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda _: setup.receiver.post(body), range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    results = sorted(outcomes(r)[0] for r in responses)
    assert results == ["duplicate"] * 19 + ["emitted"]
    setup.wait_for_runs("failover", cluster)
    setup.assert_run_count("failover", cluster, 1)


def test_a_different_alert_for_a_cluster_already_failing_over_starts_no_second_run(setup):
    cluster = new_cluster()
    assert outcomes(setup.receiver.post(notification(alert(cluster, node="eu-1")))) == ["emitted"]
    setup.wait_for_runs("failover", cluster)
    # Another rule (or Prometheus) reports the same dead primary: a new fingerprint.
    second = setup.receiver.post(notification(alert(cluster, node="eu-1", starts="2024-05-01T03:00:30Z")))
    [result] = second.json()["results"]
    assert result["outcome"] == "emitted" and result["opened_trigger_window"] is False
    assert "absorbs this one, no second run" in result["detail"]
    setup.assert_run_count("failover", cluster, 1)


def test_a_receiver_replica_without_the_ledger_starts_no_second_run(setup):
    cluster = new_cluster()
    body = notification(alert(cluster, fingerprint="b2b2b2b2b2b2b2b2"))
    assert outcomes(setup.receiver.post(body)) == ["emitted"]
    setup.wait_for_runs("failover", cluster)
    replica = setup.make_receiver("replica")
    resp = replica.post(body)
    assert outcomes(resp) == ["emitted"], "the replica has no ledger, so it sends the same event again"
    replica.stop()
    setup.assert_run_count("failover", cluster, 1)


def test_a_restarted_receiver_does_not_fire_again(setup):
    cluster = new_cluster()
    body = notification(alert(cluster))
    assert outcomes(setup.receiver.post(body)) == ["emitted"]
    setup.receiver.stop()
    setup.receiver.start()
    assert outcomes(setup.receiver.post(body)) == ["duplicate"]
    setup.wait_for_runs("failover", cluster)
    setup.assert_run_count("failover", cluster, 1)


def test_malformed_payloads_and_bad_tokens_start_nothing(setup):
    cluster = new_cluster()
    good = notification(alert(cluster))
    no_fingerprint = json.loads(json.dumps(good))
    del no_fingerprint["alerts"][0]["fingerprint"]
    v3 = {**good, "version": "3"}
    no_cluster = json.loads(json.dumps(good))
    del no_cluster["alerts"][0]["labels"]["cluster"]

    assert setup.receiver.post(good, token="wrong").status_code == 401
    assert setup.receiver.post(good, token=None).status_code == 401
    resp = setup.receiver.post(no_fingerprint)
    assert resp.status_code == 422 and resp.json()["problems"] == ["alerts.0.fingerprint: required field is missing"]
    resp = setup.receiver.post(v3)
    assert resp.status_code == 400 and "version '3'" in resp.json()["problems"][0]
    assert setup.receiver.post(b'{"version": "4", ').status_code == 400
    assert setup.receiver.post(no_cluster).status_code == 422
    setup.assert_run_count("failover", cluster, 0)
    # ...and nothing was remembered: the same alert, sent properly, still starts its run.
    assert outcomes(setup.receiver.post(good)) == ["emitted"]
    setup.wait_for_runs("failover", cluster)


def test_resolved_alerts_start_nothing(setup):
    cluster = new_cluster()
    resp = setup.receiver.post(notification(alert(cluster, status="resolved")))
    assert outcomes(resp) == ["resolved-ignored"]
    setup.assert_run_count("failover", cluster, 0)


def test_replica_alert_starts_resync_of_that_node_and_no_failover(setup):
    cluster = new_cluster()
    resp = setup.receiver.post(notification(alert(cluster, name="PostgresReplicationBroken", node="us-1")))
    assert outcomes(resp) == ["emitted"]
    [run] = setup.wait_for_runs("replica-resync", cluster)
    assert run.parameters == {"params": {"cluster": cluster, "node": "us-1", "lock_wait_seconds": 600}}
    setup.assert_run_count("failover", cluster, 0)


def test_alert_without_a_node_label_passes_no_node(setup):
    cluster = new_cluster()
    body = notification(alert(cluster))
    del body["alerts"][0]["labels"]["node"]
    assert outcomes(setup.receiver.post(body)) == ["emitted"]
    [run] = setup.wait_for_runs("failover", cluster)
    assert run.parameters["params"]["cluster"] == cluster
    assert run.parameters["params"]["node"] is None
