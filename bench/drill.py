"""Benchmark: DR drills on a private lab, N of each scenario; RTO/RPO distributions and orchestration share.

For each scenario, ``--runs`` drills through the direct recovery path (the alert path's
trigger fires once per cluster per 15 minutes, so it cannot be repeated quickly).
Printed per scenario: RTO and RPO (min / median / max), the drill's wall time, and the
share of that wall time spent in orchestration rather than in PostgreSQL, the faults
and the waits.

Orchestration share: the drill run and every run below it (failover, resync,
switchover) are read back from the Prefect API; the time covered by
their task runs is work (SQL, pg tools, DNS, waits with deadlines are all tasks); the
rest of the drill's wall time is orchestration (flow and task start-up, state and
artifact API calls, subflow creation).  A subflow's tracking task run (the task run
Prefect adds to the parent for each subflow, kept in the subflow's state by the
server) is not work: it spans the whole subflow, so counting it would count every
subflow's own orchestration as work.  The figure with it counted is printed beside, for
comparison with figures measured that way (as this script did before issue 17).  Printed
too: where the orchestration lies, inside each subflow or in the drill's own code
between two of its steps.

Goals, each printed against its figure through bench/goals.py:
- RTO of a primary-crash drill through the direct path under 5 s with a 2 s confirmation
  window (the failover's default 10 s window is run and printed too);
- RPO 0 rows for planned-switchover;
- orchestration under 10 % of the drill's wall time.

    python bench/drill.py --runs 2 [--scenarios primary-crash,planned-switchover] [--skip-default-window]
    python bench/drill.py --runs 3 --scenarios primary-crash --lab-dir .lab   # the lab that runs
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")

from bench.failover import private_lab, running_lab  # noqa: E402

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


def _drill_tree(flow_run_id: UUID) -> tuple[Any, list[Any], list[Any], dict[UUID, str]]:
    """The drill's flow run, every flow run below it, all their task runs and each run's flow name."""
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
        flows = {f: client.read_flow(f).name for f in {r.flow_id for r in runs}}
    if root.start_time is None or root.end_time is None:
        raise ValueError(f"flow run {flow_run_id} has not finished: no wall time to share out")
    return root, runs, tasks, {r.id: flows[r.flow_id] for r in runs}


def _gaps(covered: list[tuple[datetime, datetime]], start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The parts of [start, end) that no interval in ``covered`` covers."""
    out, at = [], start
    for s, e in sorted(covered):
        if s > at:
            out.append((at, min(s, end)))
        at = max(at, e)
        if at >= end:
            break
    if at < end:
        out.append((at, end))
    return [(s, e) for s, e in out if e > s]


def _overlap(a: tuple[datetime, datetime], b: tuple[datetime, datetime]) -> float:
    return max(0.0, (min(a[1], b[1]) - max(a[0], b[0])).total_seconds())


@dataclass
class Share:
    """One drill's wall time and the orchestration in it, with where that orchestration lies."""

    wall: float
    orchestration: float  # wall time covered by no task run (subflow tracking task runs are not work)
    counting_subflows_as_work: float  # the same, but a subflow's tracking task run covers the whole subflow
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def share(self) -> float:
        """Orchestration as a fraction of the wall time."""
        return self.orchestration / self.wall if self.wall else 0.0


def orchestration_share(flow_run_id: UUID) -> Share:
    """A drill run's wall time and orchestration seconds (the module docstring's definition), by phase.

    Work is the union of the task runs of the drill and of every run below it.  A
    subflow's tracking task run (the task run Prefect adds to the parent for a subflow,
    which the server keeps in the subflow's state) is not work: it spans the whole
    subflow, orchestration included, so counting it would hide every subflow's own
    start-up, lock, state and artifact calls.  ``counting_subflows_as_work`` is the
    figure with it counted, for comparison with figures measured that way.

    The phases say where the orchestration seconds lie: inside a subflow's span
    ("inside <runbook>"), or in the drill's own code between two of its work items
    (a task run, or a subflow's span), named by them.
    """
    root, runs, tasks, flow_names = _drill_tree(flow_run_id)
    tracking = {r.parent_task_run_id for r in runs if r.parent_task_run_id is not None}
    done = [t for t in tasks if t.start_time and t.end_time]
    work = [(t.start_time, t.end_time) for t in done if t.id not in tracking]
    wall = (root.end_time - root.start_time).total_seconds()
    share = Share(
        wall=wall,
        orchestration=max(0.0, wall - _union_seconds(work)),
        counting_subflows_as_work=max(0.0, wall - _union_seconds([(t.start_time, t.end_time) for t in done])),
    )
    parent_flow = {t.id: t.flow_run_id for t in tasks}
    direct = [
        r
        for r in runs
        if r.parent_task_run_id is not None and parent_flow.get(r.parent_task_run_id) == root.id and r.end_time
    ]
    items = [(t.start_time, t.end_time, t.name.rsplit("-", 1)[0]) for t in done if t.flow_run_id == root.id]
    items = [i for i in items if not any(i[2] == flow_names[r.id] for r in direct)]
    items += [(r.start_time, r.end_time, f"[{flow_names[r.id]}]") for r in direct if r.start_time]
    eps = timedelta(milliseconds=1)
    spans = [(r.start_time, r.end_time, flow_names[r.id]) for r in direct if r.start_time]
    for gap in _gaps(work, root.start_time, root.end_time):
        for start, end, name in spans:
            inside = _overlap(gap, (start, end))
            if inside:
                share.phases[f"inside {name}"] = share.phases.get(f"inside {name}", 0.0) + inside
        # The rest of the gap is the drill's own: name each piece by the work items either side.
        for piece in _gaps([(s, e) for s, e, _ in spans], *gap):
            before = max((i for i in items if i[1] <= piece[0] + eps), key=lambda i: i[1], default=None)
            after = min((i for i in items if i[0] >= piece[1] - eps), key=lambda i: i[0], default=None)
            key = f"drill: {before[2] if before else 'start'} -> {after[2] if after else 'end'}"
            share.phases[key] = share.phases.get(key, 0.0) + (piece[1] - piece[0]).total_seconds()
    return share


def _spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"min {min(values):.2f} / median {statistics.median(values):.2f} / max {max(values):.2f}"


def run(scenarios: list[str], runs: int, window: float, keep: bool, lab_dir: str | None = None) -> int:
    from flows.dr_drill import DrillParams, dr_drill

    failed = 0
    with running_lab(lab_dir) if lab_dir else private_lab(keep) as lab:
        for scenario in scenarios:
            rto, rpo_rows, rpo_s, shares = [], [], [], []
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
                share = orchestration_share(run_id)
                shares.append(share)
                if m is not None:
                    if m.rto_seconds is not None:
                        rto.append(m.rto_seconds)
                    if m.rpo_rows is not None and m.rpo_seconds is not None:  # None: no primary to read
                        rpo_rows.append(m.rpo_rows)
                        rpo_s.append(m.rpo_seconds)
                failed += 0 if result.ok else 1
                print(
                    f"  {scenario} #{i + 1}: {result.sentence()} (run {run_id}; wall {share.wall:.1f} s, "
                    f"orchestration {share.orchestration:.1f} s; {share.counting_subflows_as_work:.1f} s "
                    "counting subflows as work)",
                    flush=True,
                )
            _summary(scenario, runs, window, rto, rpo_rows, rpo_s, shares)
    return 1 if failed else 0


def _summary(
    scenario: str,
    runs: int,
    window: float,
    rto: list[float],
    rpo_rows: list[int],
    rpo_s: list[float],
    shares: list[Share],
) -> None:
    """Print one scenario's figures, the orchestration by phase, and its goals through bench/goals.py."""
    print(f"\n{scenario} ({runs} run(s), confirmation window {window:g} s)")
    print(f"  RTO s:          {_spread(rto)}")
    print(f"  RPO rows:       {_spread([float(x) for x in rpo_rows])}")
    print(f"  RPO s:          {_spread(rpo_s)}")
    print(f"  drill wall s:   {_spread([s.wall for s in shares])}")
    print(f"  orchestration:  {_spread([s.share * 100 for s in shares])} % of wall time")
    print(
        "  (counting each subflow's whole span as work: "
        f"{_spread([s.counting_subflows_as_work / s.wall * 100 for s in shares if s.wall])} %)"
    )
    if shares:
        phases: dict[str, float] = {}
        for s in shares:
            for key, seconds in s.phases.items():
                phases[key] = phases.get(key, 0.0) + seconds / len(shares)
        inside = sum(v for k, v in phases.items() if k.startswith("inside "))
        print(
            f"  orchestration by phase (mean s per drill; inside subflows {inside:.2f} s, "
            f"the drill's own {sum(phases.values()) - inside:.2f} s):"
        )
        for key, seconds in sorted(phases.items(), key=lambda kv: -kv[1]):
            if seconds >= 0.05:
                print(f"    {seconds:6.2f}  {key}")
    from bench.goals import verdict

    if scenario == "primary-crash" and window == 2 and shares:
        worst = max(s.share for s in shares)
        verdict(
            script="drill",
            what="primary-crash drill: orchestration share of wall time (worst run)",
            figure=f"{worst * 100:.1f} %",
            goal=f"< {ORCHESTRATION_GOAL * 100:.0f} %",
            met=worst < ORCHESTRATION_GOAL,
        )
    if scenario == "primary-crash" and window == 2 and rto:
        verdict(
            script="drill",
            what="primary-crash drill RTO, direct path, 2 s confirmation window (worst run)",
            figure=f"{max(rto):.2f} s",
            goal=f"< {RTO_GOAL_SECONDS:g} s",
            met=max(rto) < RTO_GOAL_SECONDS,
        )
    if scenario == "planned-switchover" and rpo_rows:
        verdict(
            script="drill",
            what="planned-switchover drill RPO (worst run)",
            figure=f"{max(rpo_rows)} rows",
            goal="0 rows",
            met=max(rpo_rows) == 0,
        )


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
    parser.add_argument("--lab-dir", help="drill the lab that already runs there, not a new one")
    args = parser.parse_args(argv)
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    code = run(scenarios, args.runs, 2.0, args.keep_lab, args.lab_dir)
    if "primary-crash" in scenarios and not args.skip_default_window:
        code |= run(["primary-crash"], args.runs, 10.0, args.keep_lab, args.lab_dir)
    return code


if __name__ == "__main__":
    sys.exit(main())
