"""The lab's Prefect components: the server with its UI, and the runbook deployments served to it.

``lab_env`` is the environment of every process that talks to that server (the served
deployments, the workers, tests and benchmarks).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from regionops.errors import ExternalSystemError
from regionops.lab.component import ComponentStatus, LabComponent, Observation, Progress, http_service_status
from regionops.lab.config import LabConfig
from regionops.lab.prefect_db import database_url
from regionops.lab.processes import http_ok, pid_alive, running_pid, spawn
from regionops.lab.wan import OPS_SITE, in_namespace
from regionops.waiting import poll_until

SERVER_START_SECONDS = 300


def lab_env(cfg: LabConfig) -> dict[str, str]:
    """Environment for processes that talk to the lab's Prefect server.

    In a lab with a WAN the API is named by the ops site's address, which the host (directly)
    and every region (across the WAN) reach: a node step runs with the settings of the
    process that submitted it, so host and executors must name the API the same way.
    """
    return {
        "PREFECT_API_URL": f"http://{cfg.control_host()}:{cfg.ports.prefect}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "REGIONOPS_TOPOLOGY": str(cfg.topology_path),
        "REGIONOPS_LAB_DIR": str(cfg.lab_dir),
        # Node steps' parameters and typed replies: written by the runbook and the region's
        # executor, read by the other, so every lab process names the same place.
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(cfg.path("results")),
    }


def lab_prefect_settings(cfg: LabConfig) -> dict[Any, str]:
    """The lab's Prefect settings for ``temporary_settings`` in a process already running (tests, bench).

    Environment variables are read when Prefect is imported; a process that points at a
    lab later needs these: the API, and the result storage node steps share with the executors.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_RESULTS_LOCAL_STORAGE_PATH

    env = lab_env(cfg)
    return {
        PREFECT_API_URL: env["PREFECT_API_URL"],
        PREFECT_RESULTS_LOCAL_STORAGE_PATH: env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"],
    }


def prefect_bin(python: str) -> str:
    """The ``prefect`` command installed beside ``python``."""
    return str(Path(python).parent / "prefect")


def prefect_healthy(cfg: LabConfig) -> bool:
    """Whether the lab's Prefect API answers."""
    return http_ok(f"http://127.0.0.1:{cfg.ports.prefect}/api/health")


def prefect_post(cfg: LabConfig, path: str) -> Any:
    """POST ``{}`` to the lab's Prefect API at ``path``; its JSON answer, or None when it does not answer."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{cfg.ports.prefect}/api/{path}",
        data=b"{}",
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=3) as resp:  # noqa: S310 - loopback URL we built
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


class LabPrefect(LabComponent):
    """The Prefect server and UI; its database is :class:`regionops.lab.prefect_db.LabPrefectDatabase`."""

    def process_names(self) -> list[str]:
        """The one server process."""
        return ["prefect-server"]

    def start(self, progress: Progress) -> None:
        """Start the server unless it runs; return once its API is healthy."""
        cfg = self.cfg
        env = {
            "PREFECT_HOME": str(cfg.path("prefect")),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_API_URL": f"http://127.0.0.1:{cfg.ports.prefect}/api",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            # PostgreSQL, not SQLite (regionops.lab.prefect_db says why).
            "PREFECT_API_DATABASE_CONNECTION_URL": database_url(cfg),
        }
        self.start_process(
            "prefect-server",
            [prefect_bin(self.python), "server", "start", "--host", "127.0.0.1", "--port", str(cfg.ports.prefect)],
            cfg.ports.prefect,
            # A fresh database runs every migration first: minutes on a loaded 2-core machine.
            timeout=SERVER_START_SECONDS,
            env=env,
        )
        poll_until(
            lambda: prefect_healthy(cfg), timeout=SERVER_START_SECONDS, interval=0.5, what="Prefect server health"
        )

    def status(self, seen: Observation) -> list[ComponentStatus]:
        """Whether the UI and API answer."""
        port = self.cfg.ports.prefect
        url = f"http://127.0.0.1:{port}"
        return [http_service_status("prefect server", url, port, f"{url}/api/health", "UI and API answer")]


class LabRunbookServe(LabComponent):
    """``deployments.serve``: every runbook served as a deployment the UI can start (run in the ops site)."""

    def process_names(self) -> list[str]:
        """The one serving process."""
        return ["prefect-serve"]

    def start(self, progress: Progress) -> None:
        """Start serving unless it does; return once the server lists a deployment."""
        name = "prefect-serve"
        if running_pid(self.cfg.lab_dir, name):
            return
        # Poll for runs every second: an alert-started failover should not wait 10 s to begin.
        # INFO: a runbook's steps are INFO lines, and the person on call reads them in the UI.
        env = lab_env(self.cfg) | {"PREFECT_LOGGING_LEVEL": "INFO", "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
        # It runs the runbooks the UI, a schedule or an alert starts: in a lab with a WAN it runs
        # in the ops site's namespace, so their SQL and API calls cross the WAN as production's do.
        argv = [self.python, "-m", "deployments.serve", "--topology", str(self.cfg.topology_path)]
        pid = spawn(self.cfg.lab_dir, name, in_namespace(self.cfg.netns(OPS_SITE), argv), env=env)
        poll_until(lambda: self._ready(pid), timeout=90, interval=0.5, what="runbook deployments")

    def _ready(self, pid: int) -> bool:
        if not pid_alive(pid):
            log = self.cfg.path("logs", "prefect-serve.log").read_text(errors="replace").splitlines()[-5:]
            raise ExternalSystemError("prefect-serve exited during start-up: " + " | ".join(log))
        return self._deployment_count() > 0

    def _deployment_count(self) -> int:
        count = prefect_post(self.cfg, "deployments/count")
        return count if isinstance(count, int) else 0

    def status(self, seen: Observation) -> list[ComponentStatus]:
        """Whether it serves, and how many deployments the server lists."""
        serving = running_pid(self.cfg.lab_dir, "prefect-serve") is not None
        count = self._deployment_count() if prefect_healthy(self.cfg) else 0
        return [
            ComponentStatus(
                name="runbook deployments",
                endpoint="prefect serve",
                running=serving,
                healthy=serving and count > 0,
                detail=f"{count} deployment(s) served" if serving else "not serving",
            )
        ]
