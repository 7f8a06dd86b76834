"""Benchmark: one node step through the node's region's executor, against the same step run in place.

A node step (``is-running``, ``control-data``, ``wal-end``...) must run on the node's own
host.  The regional operator ships it to the region's executor (a Prefect task worker,
:mod:`regionops.node.executor`) and reads its typed reply back; the local operator runs
it in the calling process, which is what the step itself costs.  The difference is the
price of running it in the right place.

Inside a flow run (as in a runbook), for each of ``--steps`` rounds: ``is-running`` of
eu-1 and ``control-data`` of us-1, through both operators.  Goals: median round trip
through the executor < 1 s, p95 < 2 s.

    python bench/node_step.py [--steps 20] [--lab-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")

from bench.goals import verdict  # noqa: E402
from regionops.lab.lab import Lab, lab_env  # noqa: E402
from regionops.lab.prefect_server import lab_prefect_settings  # noqa: E402

MEDIAN_GOAL = 1.0
P95_GOAL = 2.0


@contextlib.contextmanager
def bench_lab(lab_dir: str | None) -> Iterator[Lab]:
    """The lab at ``lab_dir`` (left running), or a private one on free ports (removed afterwards)."""
    from prefect.settings import temporary_settings

    private = lab_dir is None
    path = Path(lab_dir) if lab_dir else Path(tempfile.mkdtemp(prefix="regionops-bench-lab-"))
    os.chmod(path, 0o755)
    lab = Lab.open(path, free_ports=private)
    try:
        if private:
            print(f"starting a private lab in {path} ...", flush=True)
            lab.up(progress=lambda m: None)
        os.environ.update(lab_env(lab.cfg))
        with temporary_settings(updates=lab_prefect_settings(lab.cfg)):
            yield lab
    finally:
        if private:
            lab.down(progress=lambda m: None, purge=True)


def p95(values: list[float]) -> float:
    """The 95th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


def measure(lab: Lab, steps: int) -> dict[str, list[float]]:
    """Seconds per step, through each operator, inside one flow run."""
    from prefect import flow

    from regionops.node import NodeOperator
    from regionops.node.local import LocalNodeOperator
    from regionops.node.regional import RegionalNodeOperator

    topology = lab.topology()
    times: dict[str, list[float]] = {"executor": [], "in place": []}

    @flow(name="bench-node-step")
    def rounds() -> None:
        operators: dict[str, NodeOperator] = {
            "executor": RegionalNodeOperator(topology, "core"),
            "in place": LocalNodeOperator(topology, "core"),
        }
        for i in range(steps):
            for label, op in operators.items():
                for operation, node in (("is-running", "eu-1"), ("control-data", "us-1")):
                    start = time.monotonic()
                    op.perform(operation, node)
                    times[label].append(time.monotonic() - start)
            if (i + 1) % 5 == 0:
                print(f"  {i + 1}/{steps} rounds", flush=True)

    rounds()
    return times


def main() -> int:
    """Run the benchmark and print the figures against their goals."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="rounds of two steps each")
    parser.add_argument("--lab-dir", help="a running lab to use (default: a private one)")
    args = parser.parse_args()
    with bench_lab(args.lab_dir) as lab:
        times = measure(lab, args.steps)
    print(f"\nnode steps, {len(times['executor'])} per operator, seconds (median / p95 / max):")
    for label, values in times.items():
        print(f"  {label:<9} {statistics.median(values):.3f} / {p95(values):.3f} / {max(values):.3f}")
    median, high = statistics.median(times["executor"]), p95(times["executor"])
    extra = median - statistics.median(times["in place"])
    print(f"the executor adds {extra:.3f} s to a step's median")
    verdict("node_step", "node step through the region's executor, median", f"{median:.2f} s", "< 1 s", median < 1)
    verdict("node_step", "node step through the region's executor, p95", f"{high:.2f} s", "< 2 s", high < P95_GOAL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
