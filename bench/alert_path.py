"""Benchmark: the real alert path, from a killed primary to writes accepted again.

For each of ``--runs`` runs, a fresh lab with the whole monitoring stack (the failover
trigger opens a 15 min window per cluster, so one lab cannot be failed over twice in a
row by alerts), a client writing through the apac app every 50 ms, then
``pg_ctl stop -m immediate`` on the primary.  Measured from the fault:

    firing     PostgresPrimaryDown firing in Prometheus (scrape every 2 s, the exporter's ~1 s
               to report a refusing database, evaluation every 1 s, the refusing
               primary's `for`: 2 s in the lab)
    received   the alert receiver sent the failover event (the runbook route's group wait
               is 0 s; read from the receiver's ledger)
    created    the deployment trigger created the failover run (Prefect's triggers service)
    picked     `prefect serve` picked the run up (Pending; it polls every second)
    started    the run is Running (its own Python process has imported the runbook)
    writes     the first write acknowledged by the new primary
    completed  the failover run finished (verification and data-loss estimate included)

Each step's time over the runs (min / median / max), and the time between steps, which
names where the time goes.  Goals (printed through bench/goals.py, medians): fault ->
failover run started under 5 s, fault -> writes accepted under 10 s.

    python bench/alert_path.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect import get_client  # noqa: E402
from prefect.client.schemas.filters import FlowFilter, FlowFilterName  # noqa: E402
from prefect.client.schemas.objects import FlowRun, StateType  # noqa: E402
from prefect.settings import temporary_settings  # noqa: E402

from bench.goals import verdict  # noqa: E402
from regionops.alerting.ledger import LEDGER_FILE  # noqa: E402
from regionops.drivers.appwrite import app_writer_for  # noqa: E402
from regionops.drivers.prometheus import PrometheusClient  # noqa: E402
from regionops.lab import pglab  # noqa: E402
from regionops.lab.lab import Lab  # noqa: E402
from regionops.lab.prefect_server import lab_prefect_settings  # noqa: E402
from regionops.monitoring.tools import LAB_TOOLS, missing_tools  # noqa: E402
from regionops.topology import Topology  # noqa: E402
from regionops.waiting import poll_until  # noqa: E402

STEPS = ("firing", "received", "created", "picked", "started", "writes", "completed")
GOAL_STARTED_SECONDS = 5.0
GOAL_WRITES_SECONDS = 10.0


def _epoch(when: datetime | None) -> float | None:
    return when.timestamp() if when else None


class Writer(threading.Thread):
    """Writes through one app every 50 ms; remembers (time, node) of every acknowledged write."""

    def __init__(self, topology: Topology, region: str):
        super().__init__(daemon=True)
        self.url = topology.regions[region].app_url
        self.app = app_writer_for(topology, timeout=1)
        self.acked: list[tuple[float, str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        app = self.app
        i = 0
        while not self.stop.wait(0.05):
            i += 1
            w = app.write("apac", self.url, f"bench {i}")
            if w.accepted and w.node:
                self.acked.append((time.time(), w.node))


def one_run(index: int) -> dict[str, float]:
    """One fresh lab, one fault; seconds from the fault to each step."""
    lab_dir = Path(tempfile.mkdtemp(prefix="regionops-bench-alerts-"))
    os.chmod(lab_dir, 0o755)
    lab = Lab.open(lab_dir, free_ports=True)
    try:
        status = lab.up(progress=lambda m: None, with_prefect=True, with_monitoring=True)
        assert status.healthy, [c for c in status.components if not c.healthy]
        p = lab.cfg.ports
        prom = PrometheusClient(f"http://127.0.0.1:{p.prometheus}")
        poll_until(
            lambda: len(prom.vector("regionops:pg_last_seen_in_recovery") or []) == 3,
            timeout=60,
            what="Prometheus to know every node",
        )
        writer = Writer(lab.topology(), "apac")
        writer.start()
        time.sleep(1)
        ledger = lab.cfg.path("state", LEDGER_FILE)
        t0 = time.time()
        pglab.pgctl(lab.cfg, "eu-1").stop("immediate")
        at: dict[str, float] = {}

        def failover_runs() -> list[FlowRun]:
            with temporary_settings(updates=lab_prefect_settings(lab.cfg)):
                client = get_client(sync_client=True)
            with client:
                return client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["failover"])))

        def look() -> bool:
            now = time.time()
            if "firing" not in at and any(a.alertname == "PostgresPrimaryDown" for a in prom.alerts().firing()):
                at["firing"] = now
            if "received" not in at and ledger.exists():
                req = json.loads(ledger.read_text()).get("requests", {}).get("failover:core")
                if req and req["at"] >= t0:
                    at["received"] = req["at"]
            runs = failover_runs()
            if runs:
                run = runs[0]
                at.setdefault("created", _epoch(run.created) or now)
                if run.state_type != StateType.SCHEDULED:
                    at.setdefault("picked", now)  # polled: within ~0.2 s
                if run.start_time:
                    at.setdefault("started", _epoch(run.start_time) or now)
                if run.state_type in (StateType.COMPLETED, StateType.FAILED, StateType.CRASHED):
                    assert run.state_type == StateType.COMPLETED, f"failover run {run.name}: {run.state}"
                    at.setdefault("completed", _epoch(run.end_time) or now)
            first = next((t for t, node in writer.acked if t > t0 and node != "eu-1"), None)
            if first:
                at.setdefault("writes", first)
            return all(s in at for s in STEPS)

        poll_until(look, timeout=120, interval=0.1, what="the whole alert path")
        writer.stop.set()
        runs = failover_runs()
        assert len(runs) == 1, f"{len(runs)} failover runs"
        result = {step: round(at[step] - t0, 2) for step in STEPS}
        print(f"run {index + 1}: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.items()), flush=True)
        return result
    finally:
        lab.down(progress=lambda m: None, purge=True)


def stats(values: list[float]) -> str:
    return f"{min(values):6.1f} {statistics.median(values):7.1f} {max(values):6.1f}"


def main() -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    missing = missing_tools(LAB_TOOLS)
    if missing:
        print("; ".join(t.missing() for t in missing), file=sys.stderr)
        return 2
    results = [one_run(i) for i in range(args.runs)]
    print(f"\nalert path over {args.runs} run(s), seconds from the killed primary (min / median / max):")
    for step in STEPS:
        print(f"  {step:<10} {stats([r[step] for r in results])}")
    print("\nwhere the time goes (between steps, min / median / max):")
    previous = None
    for step in STEPS[:5]:
        base = [0.0] * len(results) if previous is None else [r[previous] for r in results]
        label = f"{previous or 'fault'} -> {step}"
        print(f"  {label:<22} {stats([r[step] - b for r, b in zip(results, base, strict=True)])}")
        previous = step
    print()
    for step, what, goal in (
        ("started", "fault -> failover run started", GOAL_STARTED_SECONDS),
        ("writes", "fault -> writes accepted", GOAL_WRITES_SECONDS),
    ):
        median = statistics.median(r[step] for r in results)
        verdict(
            script="alert_path",
            what=f"{what} (alert path)",
            figure=f"{median:.1f} s",
            goal=f"< {goal:.0f} s",
            met=median < goal,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
