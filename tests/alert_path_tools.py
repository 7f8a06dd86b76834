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
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from regionops.lab.lab import Lab
from regionops.waiting import poll_until

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@contextmanager
def monitored_lab() -> Iterator[Lab]:
    """A full lab with the monitoring stack on free ports; stopped and removed afterwards."""
    lab_dir = Path(tempfile.mkdtemp(prefix="regionops-test-alerts-"))
    os.chmod(lab_dir, 0o755)  # PostgreSQL runs as another user when tests run as root
    lab = Lab.open(lab_dir, free_ports=True)
    try:
        status = lab.up(progress=lambda m: None, with_prefect=True, with_monitoring=True)
        unhealthy = [c for c in status.components if not c.healthy]
        assert not unhealthy, unhealthy
        yield lab
    finally:
        held = lab.down(progress=lambda m: None, purge=True)
        assert not held, f"lab down left ports held: {held}"


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
