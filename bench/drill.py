"""Benchmark: DR drills on a private lab, N of each scenario; RTO/RPO distributions and orchestration share.

For each scenario, ``--runs`` drills through the direct recovery path (the alert path's
trigger fires once per cluster per 15 minutes, so it cannot be repeated quickly).
Printed per scenario: RTO and RPO (min / median / max), the drill's wall time, and the
share of that wall time spent in orchestration rather than in PostgreSQL, the faults
and the waits.

Orchestration share: the drill run and every run below it (failover, resync,
switchover, region health) are read back from the Prefect API; the time covered by
their task runs is work (SQL, pg tools, DNS, waits with deadlines are all tasks); the
rest of the drill's wall time is orchestration (flow and task start-up, state and
artifact API calls, subflow creation).

Goals, each printed against its figure:
- RTO of a primary-crash drill through the direct path under 5 s with a 2 s confirmation
  window (the failover's default 10 s window is run and printed too);
- RPO 0 rows for planned-switchover;
- orchestration under 10 % of the drill's wall time.

    python bench/drill.py --runs 2 [--scenarios primary-crash,planned-switchover] [--skip-default-window]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from datetime import datetime
from pathlib import Path
from uuid import UUID

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")

from bench.failover import private_lab  # noqa: E402

SCENARIOS = ("primary-crash", "region-outage", "primary-freeze", "replica-loss", "planned-switchover")
RTO_GOAL_SECONDS = 5.0
ORCHESTRATION_GOAL = 0.10


def _union_seconds(intervals: list[tuple[datetime, datetime]]) -> float:
    """Seconds covered by the union of [start, end) intervals."""
    total = 0.0
    current: tuple[datetime, datetime] | None = None
    for start, end in sorted(intervals):
        if current is None or start > current[1]:
            if current is not None:
                total += (current[1] - current[0]).total_seconds()
            current = (start, end)
        else:
            current = (current[0], max(current[1], end))
    if current is not None:
        total += (current[1] - current[0]).total_seconds()
    return total


def orchestration_share(flow_run_id: UUID) -> tuple[float, float]:
    """(wall seconds, orchestration seconds) of a drill run, from the Prefect API."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )
    from prefect.client.schemas.objects import TaskRun

    with get_client(sync_client=True) as client:
        root = client.read_flow_run(flow_run_id)
        runs, frontier = [root], [root.id]
        while frontier:
            children = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier))
            )
            runs += children
            frontier = [c.id for c in children]
        tasks: list[TaskRun] = []
        page = 200  # the API's largest page
        while True:
            batch = client.read_task_runs(
                task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[r.id for r in runs])),
                limit=page,
                offset=len(tasks),
            )
            tasks += batch
            if len(batch) < page:
                break
    work: list[tuple[datetime, datetime]] = [(t.start_time, t.end_time) for t in tasks if t.start_time and t.end_time]
    if root.start_time is None or root.end_time is None:
        raise ValueError(f"flow run {flow_run_id} has not finished: no wall time to share out")
    wall = (root.end_time - root.start_time).total_seconds()
    return wall, max(0.0, wall - _union_seconds(work))


def _spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"min {min(values):.2f} / median {statistics.median(values):.2f} / max {max(values):.2f}"


def run(scenarios: list[str], runs: int, window: float, keep: bool) -> int:
    from flows.dr_drill import DrillParams, dr_drill

    failed = 0
    with private_lab(keep) as lab:
        for scenario in scenarios:
            rto, rpo_rows, rpo_s, walls, shares = [], [], [], [], []
            for i in range(runs):
                state = dr_drill(
                    DrillParams(
                        topology=str(lab.cfg.topology_path),
                        scenario=scenario,
                        confirmation_seconds=window,
                        notify=False,
                    ),
                    return_state=True,
                )
                if not state.is_completed():
                    failed += 1
                    print(f"  {scenario} #{i + 1}: {state.name}: {state.message}", flush=True)
                    continue
                result = state.result()
                m = result.measurement
                run_id = state.state_details.flow_run_id
                assert run_id is not None, "a finished drill state names its flow run"
                wall, orch = orchestration_share(run_id)
                walls.append(wall)
                shares.append(orch / wall if wall else 0.0)
                if m is not None:
                    if m.rto_seconds is not None:
                        rto.append(m.rto_seconds)
                    rpo_rows.append(m.rpo_rows)
                    rpo_s.append(m.rpo_seconds)
                failed += 0 if result.ok else 1
                print(
                    f"  {scenario} #{i + 1}: {result.sentence()} (wall {wall:.1f} s, orchestration {orch:.1f} s)",
                    flush=True,
                )
            print(f"\n{scenario} ({runs} run(s), confirmation window {window:g} s)")
            print(f"  RTO s:          {_spread(rto)}")
            print(f"  RPO rows:       {_spread([float(x) for x in rpo_rows])}")
            print(f"  RPO s:          {_spread(rpo_s)}")
            print(f"  drill wall s:   {_spread(walls)}")
            print(
                f"  orchestration:  {_spread([s * 100 for s in shares])} % of wall time "
                f"(goal under {ORCHESTRATION_GOAL:.0%}: "
                f"{'met' if shares and max(shares) < ORCHESTRATION_GOAL else 'NOT met'})"
            )
            if scenario == "primary-crash" and rto:
                goal = f"goal under {RTO_GOAL_SECONDS:g} s with a 2 s window"
                met = "met" if max(rto) < RTO_GOAL_SECONDS else "NOT met"
                print(f"  RTO goal:       {goal}: {met if window == 2 else 'not applicable at this window'}")
            if scenario == "planned-switchover" and rpo_rows:
                print(f"  RPO goal:       0 rows: {'met' if max(rpo_rows) == 0 else 'NOT met'}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="drills per scenario (default 2)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument(
        "--skip-default-window",
        action="store_true",
        help="do not also run primary-crash with the failover's default 10 s confirmation window",
    )
    parser.add_argument("--keep-lab", action="store_true", help="leave the lab running afterwards")
    args = parser.parse_args(argv)
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    code = run(scenarios, args.runs, 2.0, args.keep_lab)
    if "primary-crash" in scenarios and not args.skip_default_window:
        code |= run(["primary-crash"], args.runs, 10.0, args.keep_lab)
    return code


if __name__ == "__main__":
    sys.exit(main())
