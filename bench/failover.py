"""Benchmark: how long writes stop, and what is lost, when the primary moves.

On a private lab, a client writes through a regional app's ``POST /write`` every 50 ms
while the primary moves.  For each mode, repeated ``--runs`` times:

- failover:   crash the primary (``pg_ctl stop -m immediate``), run the failover runbook,
              then replica-resync (pg_rewind) to bring the old primary back;
- switchover: run the switchover runbook to the most advanced replica;
- manual:     the baseline an engineer would reach for by hand, for comparison:
              crash the primary, ``pg_promote`` the best replica and UPSERT the writer
              record, no confirmation, fencing or checks (then resync);
- frozen:     freeze the primary (SIGSTOP) and run the failover as a dry run: seconds from
              the freeze until it is called down (then resume it; nothing changed).

Measured per run: (a) seconds from the run's start to the first acknowledged write on
the new primary; (b) acknowledged writes lost (acknowledged by the app but absent on the
new primary afterwards).  Goals: (a) under 5 s with the failover's default parameters;
(b) zero for switchover; a frozen primary called down in under 10 s.

    python bench/failover.py --runs 2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")

from bench.goals import verdict  # noqa: E402
from regionops.drivers.appwrite import app_writer_for  # noqa: E402
from regionops.drivers.postgres import observer_for  # noqa: E402
from regionops.drivers.traffic import traffic_for  # noqa: E402
from regionops.ha import sqlsteps  # noqa: E402
from regionops.ha.writer import writer_node  # noqa: E402
from regionops.lab import pglab  # noqa: E402
from regionops.lab.config import LAB_CLUSTER, LAB_NODES  # noqa: E402
from regionops.lab.lab import Lab, lab_env  # noqa: E402
from regionops.lab.prefect_server import lab_prefect_settings  # noqa: E402
from regionops.topology import Topology  # noqa: E402
from regionops.waiting import poll_until  # noqa: E402

WRITE_INTERVAL = 0.05
GOAL_SECONDS = 5.0
FROZEN_GOAL_SECONDS = 10.0


@contextlib.contextmanager
def running_lab(lab_dir: str) -> Iterator[Lab]:
    """A lab that already runs (``regionops lab up --lab-dir DIR``), left running afterwards."""
    from prefect.settings import temporary_settings

    lab = Lab.open(Path(lab_dir))
    env = lab_env(lab.cfg)
    os.environ.update(env)
    with temporary_settings(updates=lab_prefect_settings(lab.cfg)):
        yield lab


@contextlib.contextmanager
def private_lab(keep: bool) -> Iterator[Lab]:
    """A lab on free ports in a fresh directory, with Prefect pointed at its server."""
    from prefect.settings import temporary_settings

    lab_dir = Path(tempfile.mkdtemp(prefix="regionops-bench-lab-"))
    os.chmod(lab_dir, 0o755)
    lab = Lab.open(lab_dir, free_ports=True)
    try:
        print(f"starting a private lab in {lab_dir} ...", flush=True)
        status = lab.up(progress=lambda m: None)
        if not status.healthy:
            raise SystemExit(
                "the lab is not healthy: "
                + "; ".join(f"{c.name}: {c.detail}" for c in status.components if not c.healthy)
            )
        env = lab_env(lab.cfg)
        os.environ.update(env)
        with temporary_settings(updates=lab_prefect_settings(lab.cfg)):
            yield lab
    finally:
        if keep:
            print(f"lab kept running in {lab_dir} (regionops lab down --lab-dir {lab_dir} --purge)")
        else:
            lab.down(progress=lambda m: None, purge=True)


class Writer:
    """Inserts through one app every 50 ms; records (time, row id, node) of every acknowledged write."""

    def __init__(self, topology: Topology, region: str):
        self.url, self.region = topology.regions[region].app_url, region
        self.app = app_writer_for(topology, timeout=2)
        self.acked: list[tuple[float, int, str]] = []
        self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        app = self.app
        i = 0
        while not self._stop.wait(WRITE_INTERVAL):
            i += 1
            w = app.write(self.region, self.url, f"bench {i}")
            if w.accepted and w.row_id is not None and w.node:
                self.acked.append((time.monotonic(), w.row_id, w.node))
            else:
                self.refused += 1

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class Sample:
    mode: str
    old: str
    new: str
    to_first_write: float | None
    lost: int
    acked: int
    refused: int


@dataclass
class Results:
    samples: list[Sample] = field(default_factory=list)

    def of(self, mode: str) -> list[Sample]:
        return [s for s in self.samples if s.mode == mode]


def primary_of(lab: Lab) -> str:
    obs = observer_for(connect_timeout=1)
    for node in LAB_NODES:
        if obs.observe(node, pglab.conninfo(lab.cfg, node)).role == "primary":
            return node
    raise RuntimeError("no primary")


def steady(lab: Lab, primary: str, timeout: float = 60) -> None:
    """Wait until every other node streams from ``primary`` (the lab's steady state)."""
    cluster = lab.topology().clusters[LAB_CLUSTER]
    for node in LAB_NODES:
        if node != primary:
            check = sqlsteps.wait_streaming(cluster, node, primary, 16 << 20, timeout)
            if not check.ok:
                raise RuntimeError(check.sentence())


def ids_on(lab: Lab, node: str) -> set[int]:
    return {
        r["id"]
        for r in sqlsteps.sql_node(lab.topology().clusters[LAB_CLUSTER], node).query("SELECT id FROM app_events")
    }


def crash_primary(lab: Lab) -> None:
    """The fault: the primary's PostgreSQL dies without a shutdown checkpoint."""
    pglab.pgctl(lab.cfg, primary_of(lab)).stop("immediate")


def measure(
    lab: Lab,
    mode: str,
    move: Callable[[], str],
    region: str,
    *,
    fault: Callable[[Lab], None] | None = None,
    settle: float = 1.5,
) -> Sample:
    """Under write load: inject ``fault``, then time ``move`` (which returns the new primary) from its start."""
    old = primary_of(lab)
    with Writer(lab.topology(), region) as writer:
        time.sleep(1.0)  # steady writes before the event
        if fault is not None:
            fault(lab)
        started = time.monotonic()  # the runbooks' modules are imported already (main): not part of a run
        new = move()
        poll_until(
            lambda: any(n == new and t >= started for t, _, n in writer.acked),
            timeout=30,
            interval=0.05,
            what=f"a write on {new}",
        )
        time.sleep(settle)
    first = next(t for t, _, n in writer.acked if n == new and t >= started)
    acked = {i for _, i, _ in writer.acked}
    lost = len(acked - ids_on(lab, new))
    return Sample(mode, old, new, round(first - started, 2), lost, len(acked), writer.refused)


def run_failover(lab: Lab, grace: float | None) -> str:
    """The failover runbook with its default parameters (``grace``: another confirmation ceiling)."""
    from flows.failover import FailoverParams, failover

    extra = {} if grace is None else {"grace_seconds": grace}
    result = failover(FailoverParams(notify=True, reason="bench/failover.py", **extra))
    return result.new_primary


def measure_frozen(lab: Lab, grace: float | None) -> float:
    """Freeze the primary, dry-run the failover: seconds from the freeze until it is called down."""
    from flows.failover import FailoverParams, failover
    from regionops.fault_injectors import fault_injector_for

    faults = fault_injector_for(lab.topology())
    old = primary_of(lab)
    extra = {} if grace is None else {"grace_seconds": grace}
    faults.inject("primary-freeze", LAB_CLUSTER, old)
    started = time.monotonic()
    try:
        state = failover(FailoverParams(dry_run=True, notify=False, **extra), return_state=True)
        seconds = time.monotonic() - started
    finally:
        faults.resume("primary-freeze", LAB_CLUSTER, old)
    if not state.is_completed():
        raise RuntimeError(f"the frozen primary was not called down: {state.message}")
    return round(seconds, 2)


def run_manual(lab: Lab) -> str:
    """The by-hand baseline (primary already crashed): promote the replica that replayed most, UPSERT
    DNS, re-point the other.  No confirmation, no fencing, no verification."""
    topo = lab.topology()
    cluster = topo.clusters[LAB_CLUSTER]
    states = {n: sqlsteps.observe(cluster, n) for n in LAB_NODES}
    replicas = [n for n, s in states.items() if s.reachable and s.role == "replica"]
    new = max(replicas, key=lambda n: lsn.value if (lsn := states[n].replay_lsn) else 0)
    sqlsteps.sql_node(cluster, new).promote()
    sqlsteps.ensure_slots(cluster, new, [n for n in LAB_NODES if n != new])
    traffic_for(topo).set_record(
        topo.traffic.route53_zone,
        topo.writer_record(LAB_CLUSTER),
        topo.node_dns_name(LAB_CLUSTER, new),
        ttl=topo.traffic.record_ttl,
    )
    for n in replicas:
        if n != new:
            sqlsteps.repoint_replica(cluster, n, new)
    return new


def run_switchover(lab: Lab) -> str:
    from flows.switchover import SwitchoverParams, switchover

    return switchover(SwitchoverParams(notify=True)).new_primary


def resync(lab: Lab) -> None:
    """Bring the crashed old primary back as a replica (replica-resync: pg_rewind)."""
    from flows.replica_resync import ResyncParams, replica_resync

    result = replica_resync(ResyncParams(notify=False))
    if not result.ok:
        raise RuntimeError(result.sentence())


def distribution(values: list[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return (
        f"min {ordered[0]:g}  median {statistics.median(ordered):g}  p90 {p90:g}  max {ordered[-1]:g}"
        f"  (n={len(ordered)})"
    )


def report(results: Results, grace: float | None, frozen: list[float]) -> None:
    print()
    print(
        f"{'mode':<11} {'run':>3}  {'from -> to':<16} {'to first write':>15} {'acked lost':>10} "
        f"{'acked':>6} {'refused':>8}"
    )
    for mode in ("failover", "switchover", "manual"):
        for i, s in enumerate(results.of(mode), 1):
            print(
                f"{mode:<11} {i:>3}  {s.old + ' -> ' + s.new:<16} {s.to_first_write:>13.2f} s {s.lost:>10} "
                f"{s.acked:>6} {s.refused:>8}"
            )
    print()
    for mode in ("failover", "switchover", "manual"):
        samples = results.of(mode)
        if not samples:
            continue
        print(f"{mode}:")
        print(
            f"  (a) run start -> first acknowledged write on the new primary: "
            f"{distribution([s.to_first_write for s in samples if s.to_first_write is not None])} s"
        )
        print(f"  (b) acknowledged writes lost: {distribution([float(s.lost) for s in samples])}")
    print()
    fo, so = results.of("failover"), results.of("switchover")
    params = "default parameters" if grace is None else f"grace_seconds={grace:g}"
    if fo:
        worst = max(s.to_first_write or 0 for s in fo)
        verdict(
            script="failover",
            what=f"crash failover, run start -> writes accepted, {params}",
            figure=f"{worst:.2f} s (worst of {len(fo)})",
            goal=f"< {GOAL_SECONDS:g} s",
            met=worst < GOAL_SECONDS and grace is None,
        )
    if so:
        lost = sum(s.lost for s in so)
        print(f"goal: zero acknowledged writes lost in switchover: {'MET' if lost == 0 else 'MISSED'} ({lost} lost)")
    if frozen:
        worst = max(frozen)
        print(f"frozen: freeze -> called down (dry run, includes the run's start): {distribution(frozen)} s")
        verdict(
            script="failover",
            what=f"frozen primary, freeze -> called down, {params}",
            figure=f"{worst:.2f} s (worst of {len(frozen)})",
            goal=f"< {FROZEN_GOAL_SECONDS:g} s",
            met=worst < FROZEN_GOAL_SECONDS,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="repetitions per mode (default 3)")
    parser.add_argument(
        "--grace",
        type=float,
        default=None,
        help="failover confirmation ceiling in seconds (default: the runbook's default; the goal needs the default)",
    )
    parser.add_argument("--region", default="us", help="the app the client writes through")
    parser.add_argument("--modes", default="failover,switchover,manual,frozen", help="comma-separated modes to run")
    parser.add_argument("--keep-lab", action="store_true", help="leave the lab running afterwards")
    parser.add_argument("--lab-dir", help="use the lab that already runs there (its primary moves), not a new one")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    # Import the runbooks before anything is timed: a one-off cost of this process, not of a run.
    import flows.failover  # noqa: F401
    import flows.replica_resync  # noqa: F401
    import flows.switchover  # noqa: F401

    results = Results()
    frozen: list[float] = []
    with running_lab(args.lab_dir) if args.lab_dir else private_lab(args.keep_lab) as lab:
        steady(lab, primary_of(lab))
        for i in range(args.runs):
            if "failover" in modes:
                s = measure(lab, "failover", lambda: run_failover(lab, args.grace), args.region, fault=crash_primary)
                results.samples.append(s)
                print(
                    f"failover   {i + 1}: {s.old} -> {s.new}: first write after {s.to_first_write:.2f} s, "
                    f"{s.lost} acknowledged write(s) lost",
                    flush=True,
                )
                resync(lab)
                steady(lab, s.new)
            if "switchover" in modes:
                s = measure(lab, "switchover", lambda: run_switchover(lab), args.region)
                results.samples.append(s)
                print(
                    f"switchover {i + 1}: {s.old} -> {s.new}: first write after {s.to_first_write:.2f} s, "
                    f"{s.lost} acknowledged write(s) lost",
                    flush=True,
                )
                steady(lab, s.new)
            if "manual" in modes:
                s = measure(lab, "manual", lambda: run_manual(lab), args.region, fault=crash_primary)
                results.samples.append(s)
                print(
                    f"manual     {i + 1}: {s.old} -> {s.new}: first write after {s.to_first_write:.2f} s, "
                    f"{s.lost} acknowledged write(s) lost",
                    flush=True,
                )
                resync(lab)
                steady(lab, s.new)
            if "frozen" in modes:
                frozen.append(measure_frozen(lab, args.grace))
                print(f"frozen     {i + 1}: called down {frozen[-1]:.2f} s after the freeze", flush=True)
                steady(lab, primary_of(lab), timeout=90)
        assert writer_node(lab.topology(), LAB_CLUSTER) == primary_of(lab)
    report(results, args.grace, frozen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
