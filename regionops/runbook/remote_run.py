"""`regionops run NAME`: start the runbook's deployment and follow its run to the end.

A runbook runs where its deployment says (the ops site's runner, a region's worker), so
its SQL and API calls cross the network as production's do; the shell that asked only
watches, as ``prefect deployment run --watch`` does.  ``--here`` runs it in this process
instead, for debugging, and :func:`where_this_runs` says where that is.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel

from regionops.errors import ConfigurationError, ExternalSystemError

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

FOLLOW_INTERVAL_SECONDS = 1.0
NETNS_DIR = Path("/run/netns")


def deployment_name(runbook: str, deployment: str) -> str:
    """Prefect's full name of the runbook's deployment: ``<flow>/<deployment>``."""
    return f"{runbook}/{deployment}"


def start_and_follow(
    runbook: str,
    deployment: str,
    params: BaseModel,
    say: Callable[[str], None],
    timeout: float | None = None,
) -> Any:
    """Start ``runbook``'s deployment with ``params``, report each state it passes, return its final state.

    Every parameter is sent (not only those given), because Prefect replaces the
    deployment's ``params`` default as a whole.  ``timeout`` (None: no limit) bounds
    the wait; the run is not cancelled when it passes, only no longer followed.
    """
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    name = deployment_name(runbook, deployment)
    try:
        run = cast("FlowRun", run_deployment(name, parameters={"params": params.model_dump(mode="json")}, timeout=0))
    except ObjectNotFound:
        raise ConfigurationError(
            f"no deployment {name} on the Prefect server at {PREFECT_API_URL.value()}: start the lab "
            "(`regionops lab up`) or deploy the runbooks (prefect.yaml), name another with --deployment, "
            "or run it in this process with --here"
        ) from None
    say(f"started deployment {name}: flow run {run.name} ({run.id}); following it to the end")
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = None
    with get_client(sync_client=True) as client:
        while True:
            current = client.read_flow_run(run.id)
            state = current.state
            if state is not None and state.name != seen:
                seen = state.name
                say(f"{run.name}: {state.name}" + (f" ({state.message})" if state.message and state.is_final() else ""))
            if state is not None and state.is_final():
                return state
            if deadline is not None and time.monotonic() > deadline:
                raise ExternalSystemError(
                    f"flow run {run.name} of {name} did not finish within {timeout:g} s; it goes on: "
                    "follow it in the Prefect UI"
                )
            time.sleep(FOLLOW_INTERVAL_SECONDS)


def failure_message(state: Any, in_process: bool) -> str:
    """The error of a run that did not complete, as the runbook raised it.

    An in-process run holds the exception itself; a deployment's run, its message.
    """
    if in_process:
        try:
            state.result()
        except Exception as exc:  # noqa: BLE001 - the runbook's own error is the message
            return f"{type(exc).__name__}: {exc}"
    message = state.message or state.name
    return message.removeprefix("Flow run encountered an exception: ")


def where_this_runs() -> str:
    """This process's host and network (a lab site's namespace when it is in one)."""
    here = _netns_name()
    network = f"network namespace {here}" if here else "the host's own network"
    return f"host {socket.gethostname()}, {network}"


def _netns_name() -> str | None:
    try:
        mine = os.stat("/proc/thread-self/ns/net").st_ino
        names = sorted(NETNS_DIR.iterdir()) if NETNS_DIR.is_dir() else []
    except OSError:
        return None
    for path in names:
        try:
            if os.stat(path).st_ino == mine:
                return None if path.name.endswith("-host") else path.name
        except OSError:
            continue
    return None
