"""Helpers for the real alert path: a lab of its own with the whole stack, read over HTTP.

The lab runs PostgreSQL, apps, Slack sink, its own Prefect server with the runbooks
served (`prefect serve` runs what the alert triggers create), the alert receiver,
postgres_exporter per node, Prometheus, Alertmanager and the Pushgateway.  The test
process starts no flow itself and talks to that lab over HTTP only, so the session
lab's Prefect server (and its automations, which would also act on cluster `core`)
never sees these alerts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from regionops.lab.lab import Lab
from regionops.lab.processes import pid_alive, port_open
from regionops.waiting import poll_until

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def lab_cli(*args: str, lab_dir: Path) -> subprocess.CompletedProcess[str]:
    """``regionops ARGS`` as a person runs it, for the lab in ``lab_dir`` (not the session lab's Prefect)."""
    env = {**os.environ, "REGIONOPS_LAB_DIR": str(lab_dir)}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "regionops.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )


@dataclass
class LabProcesses:
    """What a lab runs, read before ``lab down`` so the test can check that nothing of it is left."""

    pids: list[int]
    ports: list[int]


def lab_processes(lab: Lab) -> LabProcesses:
    """Every pid the lab recorded (its PostgreSQL postmasters included) and every port it listens on."""
    pids = [int(p.read_text()) for p in lab.cfg.path("run").glob("*.pid")]
    pids += [int((lab.cfg.data_dir(n) / "postmaster.pid").read_text().split()[0]) for n in ("eu-1", "us-1", "apac-1")]
    return LabProcesses(pids=pids, ports=list(lab.cfg.ports.all().values()))


@contextmanager
def monitored_lab() -> Iterator[Lab]:
    """A full lab on free ports, made and removed with the CLI as a person does: ``regionops lab up``
    (monitoring, the regional workers, every component), then ``regionops lab down --purge``,
    after which no process of it runs and none of its ports is open.
    """
    lab_dir = Path(tempfile.mkdtemp(prefix="regionops-test-alerts-"))
    os.chmod(lab_dir, 0o755)  # PostgreSQL runs as another user when tests run as root
    processes = None
    try:
        up = lab_cli("lab", "up", "--free-ports", lab_dir=lab_dir)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        assert "[1/15]" in up.stdout  # progress is reported (monitoring is the 15th step, after the workers)
        lab = Lab.open(lab_dir)
        processes = lab_processes(lab)
        yield lab
    finally:
        if processes is None and (lab_dir / "lab.json").exists():
            processes = lab_processes(Lab.open(lab_dir))
        down = lab_cli("lab", "down", "--purge", lab_dir=lab_dir)
    assert down.returncode == 0, down.stdout + down.stderr
    assert processes is not None
    assert [p for p in processes.pids if pid_alive(p)] == []
    assert [p for p in processes.ports if port_open(p)] == []
    assert not lab_dir.exists()


class Http:
    """The lab's HTTP APIs: Prefect (REST), Prometheus, Alertmanager, the Slack sink."""

    def __init__(self, lab: Lab):
        p = lab.cfg.ports
        self.prefect = f"http://127.0.0.1:{p.prefect}/api"
        self.prometheus = f"http://127.0.0.1:{p.prometheus}"
        self.alertmanager = f"http://127.0.0.1:{p.alertmanager}"
        self.slack = f"http://127.0.0.1:{p.slack}"
        self.client = httpx.Client(timeout=10)
        self._deployments: dict[str, str] = {}

    # -- Prefect -------------------------------------------------------------------
    def deployment_id(self, flow_name: str) -> str:
        """The served ``lab`` deployment of a runbook."""
        if not self._deployments:
            flows = {f["id"]: f["name"] for f in self.client.post(f"{self.prefect}/flows/filter", json={}).json()}
            for d in self.client.post(f"{self.prefect}/deployments/filter", json={}).json():
                self._deployments[flows[d["flow_id"]]] = d["id"]
        return self._deployments[flow_name]

    def runs(self, flow_name: str) -> list[dict[str, Any]]:
        """Every run of a runbook's served deployment, oldest first."""
        body = {
            "flow_runs": {"deployment_id": {"any_": [self.deployment_id(flow_name)]}},
            "sort": "EXPECTED_START_TIME_ASC",
        }
        return self.client.post(f"{self.prefect}/flow_runs/filter", json=body).json()

    def start_run(self, flow_name: str, params: dict[str, Any]) -> str:
        """Create a run of the served deployment (what the UI's Run button does)."""
        resp = self.client.post(
            f"{self.prefect}/deployments/{self.deployment_id(flow_name)}/create_flow_run",
            json={"parameters": {"params": params}},
        )
        resp.raise_for_status()
        return resp.json()["id"]

    def run(self, run_id: str) -> dict[str, Any]:
        return self.client.get(f"{self.prefect}/flow_runs/{run_id}").json()

    def wait_finished(self, run_id: str, timeout: float = 120) -> dict[str, Any]:
        return poll_until(
            lambda: (r := self.run(run_id))["state_type"] in TERMINAL and r,
            timeout=timeout,
            interval=0.5,
            what=f"flow run {run_id} to finish",
        )

    def wait_runs(self, flow_name: str, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        """Wait until ``count`` runs of ``flow_name`` exist; fail at once if more appear."""

        def enough() -> list[dict[str, Any]] | None:
            found = self.runs(flow_name)
            assert len(found) <= count, f"{len(found)} {flow_name} runs, expected {count}: {names(found)}"
            return found if len(found) == count else None

        return poll_until(enough, timeout=timeout, interval=0.3, what=f"{count} {flow_name} run(s)")

    def assert_quiet(self, counts: dict[str, int], seconds: float) -> None:
        """For ``seconds``, the run counts stay exactly ``counts``."""
        deadline = time.monotonic() + seconds
        while True:
            now = {name: len(self.runs(name)) for name in counts}
            assert now == counts, f"runs changed: {now}, expected {counts}"
            if time.monotonic() >= deadline:
                return
            time.sleep(0.5)

    # -- Prometheus / Alertmanager -------------------------------------------------------
    def query(self, promql: str) -> list[dict[str, Any]]:
        resp = self.client.get(f"{self.prometheus}/api/v1/query", params={"query": promql}).json()
        return resp["data"]["result"]

    def firing(self, alertname: str) -> list[dict[str, str]]:
        """Label sets of ``alertname`` alerts firing in Prometheus now."""
        alerts = self.client.get(f"{self.prometheus}/api/v1/alerts").json()["data"]["alerts"]
        return [a["labels"] for a in alerts if a["labels"]["alertname"] == alertname and a["state"] == "firing"]

    def silences(self) -> list[dict[str, Any]]:
        return self.client.get(f"{self.alertmanager}/api/v2/silences").json()

    def failed_webhook_notifications(self) -> float:
        """Alertmanager's count of failed webhook deliveries (its own /metrics)."""
        text = self.client.get(f"{self.alertmanager}/metrics").text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("alertmanager_notifications_failed_total") and 'integration="webhook"' in line
        )

    # -- Slack sink ----------------------------------------------------------------------
    def slack_messages(self) -> list[dict[str, Any]]:
        return self.client.get(f"{self.slack}/messages").json()


def names(runs: list[dict[str, Any]]) -> list[str]:
    return [f"{r['name']} {r['state_type']} {r.get('parameters', {}).get('params', {}).get('node')}" for r in runs]


def wait_steady(http: Http, timeout: float = 60) -> None:
    """Prometheus knows every node's role and fires no HA alert: a fault is judged against this."""
    poll_until(
        lambda: (
            len(http.query("regionops:pg_last_seen_in_recovery")) == 3
            and not http.firing("PostgresPrimaryDown")
            and not http.firing("PostgresReplicationBroken")
        ),
        timeout=timeout,
        interval=0.5,
        what="Prometheus to see a steady cluster",
    )
