"""Finding and following flow runs that something else started (an automation, an alert).

The DR drill's ``alert`` path does not call the failover itself: it posts an alert and
must then find the run the deployment trigger created, and wait for it to finish.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
)
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort

from regionops.waiting import poll_until


def _matches(run: FlowRun, cluster: str, topology: str | None) -> bool:
    params = (run.parameters or {}).get("params") or {}
    if params.get("cluster") not in (None, cluster):
        return False
    return topology is None or params.get("topology") in (None, topology)


def wait_for_started_run(
    flow_name: str, cluster: str, since: datetime, timeout: float, topology: str | None = None
) -> FlowRun:
    """The first run of ``flow_name`` for ``cluster`` created after ``since``; DeadlineExceeded if none appears."""
    window = FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=since - timedelta(seconds=1)))

    def find() -> FlowRun | None:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                flow_run_filter=window,
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            )
        return next((r for r in runs if _matches(r, cluster, topology)), None)

    return poll_until(find, timeout=timeout, interval=0.5, what=f"a {flow_name} run started for {cluster}")


def wait_for_run_end(run_id: UUID, timeout: float) -> FlowRun:
    """Wait until the run is in a final state; return it.  DeadlineExceeded otherwise."""

    def final() -> FlowRun | None:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(run_id)
        return run if run.state is not None and run.state.is_final() else None

    return poll_until(final, timeout=timeout, interval=0.5, what=f"flow run {run_id} to finish")


def runs_started_since(flow_name: str, since: datetime) -> list[FlowRun]:
    """Every run of ``flow_name`` created after ``since`` (for checks that exactly one started)."""
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            flow_run_filter=FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=since)),
        )
