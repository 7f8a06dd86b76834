"""Runbooks started the way the UI starts them: a flow run of the lab's served deployment."""

from __future__ import annotations

import pytest
from prefect import get_client

from flows.registry import RUNBOOKS
from regionops.waiting import poll_until

pytestmark = pytest.mark.lab


def test_every_runbook_is_served_to_the_ui(lab):
    with get_client(sync_client=True) as client:
        names = {d.name for d in client.read_deployments() if d.name == "lab"}
        flows = {client.read_flow(d.flow_id).name for d in client.read_deployments() if d.name == "lab"}
    assert names == {"lab"}
    assert set(RUNBOOKS) <= flows


def test_region_health_started_from_the_ui_runs_to_completion(lab):
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("region-health/lab")
        run = client.create_flow_run_from_deployment(deployment.id)

        def finished():
            state = client.read_flow_run(run.id).state
            return state if state and state.is_final() else None

        state = poll_until(finished, timeout=90, interval=1, what="the served region-health run to finish")
    assert state.is_completed(), state
