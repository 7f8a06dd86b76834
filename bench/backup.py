"""Benchmark: the backup and restore-verify runbooks against the bare pgBackRest commands they run.

    .venv/bin/python bench/backup.py --size-mb 1024 [--repeat 2]

Starts a private lab (PostgreSQL x3, moto over TLS, Prefect server) in a temporary
directory, fills the primary with pgbench data of about ``--size-mb``, then, in one run:

- backup: bare ``pgbackrest --config=<eu-1's> --stanza=core --type=full --repo=1 backup``
  against the backup runbook (``backup_type=full``, repo1 only, no verify).  What the
  runbook adds: the node seam, observing the nodes, the fingerprint point and
  ``pgbackrest check``, ``expire``, ``info``, the report.  Goal: at most 1.10x.
- restore verification: bare ``pgbackrest restore --set=<label> --type=immediate
  --target-action=promote`` into an empty directory, ``pg_ctl start``, wait for the
  promotion, count the rows, stop; against the restore-verify runbook on the same set
  (recovery to the set's proof restore point, fingerprint compared).  Goal: at most 1.20x.
- a point-in-time restore (restore-verify with a time target) and its time;
- sizes: database, bytes copied and bytes stored, for the full backup and for an
  incremental one after a small change;
- the longest write stall a backup causes: an application writer inserts into a
  fingerprint table every 10 ms throughout both sides' backups, and the longest insert
  is reported (the proof point locks the fingerprint tables for an instant only; goal
  under 50 ms on the lab's seed data), beside how long the proof point held writes.

Each side runs ``--repeat`` times (who goes first rotates: the second backup of a round
meets the first one's WAL still archiving); the best of each is compared.  The
orchestration overhead is printed in seconds, each goal through ``bench/goals.py``
(backup <= 1.10x and overhead < 0.5 s, restore verification <= 1.20x, write stall
< 50 ms), and, for the best run of each runbook, where its time went: each task run's
start and duration as the Prefect server recorded them.  The lab is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")

from bench.goals import verdict  # noqa: E402
from regionops.drivers.pgtools import as_user, run_tool, tool  # noqa: E402
from regionops.lab.lab import Lab, lab_env  # noqa: E402

PGBENCH_MB_PER_SCALE = 15.5  # pgbench_accounts (100,000 rows per scale) with its index


@contextmanager
def private_lab() -> Iterator[Lab]:
    """A lab on free ports in a fresh directory, with Prefect pointed at it; removed afterwards."""
    from prefect.settings import temporary_settings

    from regionops.lab.prefect_server import lab_prefect_settings

    lab_dir = Path(tempfile.mkdtemp(prefix="regionops-bench-lab-"))
    os.chmod(lab_dir, 0o755)
    lab = Lab.open(lab_dir, free_ports=True)
    try:
        print(f"starting a private lab in {lab_dir} ...", flush=True)
        lab.up(progress=lambda m: None, with_prefect=True)
        os.environ.update(lab_env(lab.cfg))
        with temporary_settings(updates=lab_prefect_settings(lab.cfg)):
            yield lab
    finally:
        lab.down(progress=lambda m: None, purge=True)


T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    started = time.monotonic()
    result = fn()
    return time.monotonic() - started, result


def fill(lab: Lab, size_mb: int) -> int:
    """pgbench -i at the scale that gives about ``size_mb``; returns the scale."""
    from regionops.drivers.postgres import sql_node_at
    from regionops.lab import pglab

    scale = max(1, round(size_mb / PGBENCH_MB_PER_SCALE))
    port = lab.cfg.ports.postgres["eu-1"]
    print(f"pgbench -i -s {scale} (about {scale * PGBENCH_MB_PER_SCALE:.0f} MB) ...", flush=True)
    run_tool(
        [tool("pgbench"), "-i", "-q", "-s", str(scale), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "app"],
        timeout=3600,
        env={"PGPASSWORD": lab.cfg.pg_password() or ""},
    )
    sql_node_at(pglab.conninfo(lab.cfg, "eu-1")).checkpoint()
    return scale


def bare_restore(lab: Lab, label: str, work: Path) -> float:
    """The bare commands restore verification stands on: restore, start, promotion, count, stop."""
    from regionops.backup.scratch import free_port, prepare_empty_dir, remove_dir, start_instance
    from regionops.drivers.pgbackrest import restore_driver
    from regionops.drivers.pgconf import set_auto_conf, write_hba
    from regionops.drivers.postgres import ConnInfo, sql_node_at
    from regionops.lab.config import LAB_CLUSTER
    from regionops.waiting import poll_until

    os_user = lab.cfg.os_user
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.chmod(work, 0o755)
    data = work / "data"
    driver = restore_driver(lab.topology(), LAB_CLUSTER, data, work / "pgbackrest")
    started = time.monotonic()
    try:
        prepare_empty_dir(data, os_user)
        argv = driver.argv(
            "restore",
            f"--pg1-path={data}",
            "--repo=1",
            f"--set={label}",
            "--type=immediate",
            "--target-action=promote",
            "--archive-mode=off",
        )
        subprocess.run(as_user(argv, os_user), check=True, cwd="/", capture_output=True)
        port = free_port()
        set_auto_conf(
            data,
            {
                "port": str(port),
                "listen_addresses": "127.0.0.1",
                "unix_socket_directories": "",
                "primary_conninfo": None,
                "primary_slot_name": None,
            },
            os_user,
        )
        write_hba(data, ["host all postgres 127.0.0.1/32 trust"], os_user)
        start_instance(data, work / "pg.log", os_user)
        node = sql_node_at(ConnInfo("127.0.0.1", port, "app", "postgres"))
        poll_until(lambda: not node.query("SELECT pg_is_in_recovery() AS r")[0]["r"], timeout=600, what="promotion")
        node.query("SELECT count(*) AS n FROM pgbench_accounts")
        return time.monotonic() - started
    finally:
        remove_dir(work, os_user)
        shutil.rmtree(work, ignore_errors=True)


class StallProbe:
    """An application writer: an insert into a fingerprint table every 10 ms; the longest one is the stall."""

    def __init__(self, lab: Lab, interval: float = 0.01):
        import threading

        from regionops.lab import pglab

        self.info = pglab.conninfo(lab.cfg, "eu-1")
        self.interval = interval
        self.longest = 0.0
        self.writes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from regionops.drivers.postgres import connect

        with connect(self.info, statement_timeout_ms=60_000) as conn:
            while not self._stop.wait(self.interval):
                started = time.monotonic()
                conn.execute("INSERT INTO app_events (region, payload) VALUES ('eu', 'bench write stall probe')")
                self.longest = max(self.longest, time.monotonic() - started)
                self.writes += 1

    def __enter__(self) -> StallProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


def main() -> int:
    parser = argparse.ArgumentParser(description="backup and restore-verify runbooks vs bare pgBackRest")
    parser.add_argument("--size-mb", type=int, default=1024, help="database size to create with pgbench (default 1024)")
    parser.add_argument("--repeat", type=int, default=2, help="measure each side this many times; best counts")
    args = parser.parse_args()

    from flows.backup import BackupParams, backup
    from flows.restore_verify import RestoreVerifyParams, restore_verify
    from regionops.drivers.pgbackrest import PgBackRest
    from regionops.drivers.postgres import sql_node_at
    from regionops.lab import pglab
    from regionops.lab.config import LAB_CLUSTER, LAB_PRIMARY

    with private_lab() as lab:
        fill(lab, args.size_mb)
        topo_path = str(lab.cfg.topology_path)
        driver = PgBackRest.for_node(lab.topology(), LAB_CLUSTER, LAB_PRIMARY)
        bare_argv = driver.argv("backup", "--type=full", "--repo=1")
        params = BackupParams(topology=topo_path, backup_type="full", repos=["eu"], verify=False, notify=False)
        bare_b, run_b, labels = [], [], []
        stall = {"bare": 0.0, "runbook": 0.0}
        held: list[float] = []
        profiles: dict[str, list] = {"backup": [], "restore verification": []}
        for i in range(args.repeat):
            order = ("bare", "runbook") if i % 2 == 0 else ("runbook", "bare")
            print(f"round {i + 1}/{args.repeat}: {' then '.join(order)} full backup ...", flush=True)
            for who in order:
                with StallProbe(lab) as probe:
                    if who == "bare":
                        seconds, _ = timed(
                            lambda: subprocess.run(
                                as_user(bare_argv, lab.cfg.os_user), check=True, cwd="/", capture_output=True
                            )
                        )
                        bare_b.append(seconds)
                    else:
                        seconds, state = timed(lambda: backup(params, return_state=True))
                        result = state.result()
                        run_b.append(seconds)
                        profiles["backup"].append((seconds, state))
                        assert result.label, "the backup runbook named no backup set"
                        labels.append(result.label)
                        if result.proof and result.proof.writes_held_ms is not None:
                            held.append(result.proof.writes_held_ms)
                stall[who] = max(stall[who], probe.longest)
        label = labels[-1]
        print(f"restore verification of {label}: the runbook, then the bare commands ...", flush=True)
        run_r, bare_r = [], []
        work = Path(tempfile.mkdtemp(prefix="regionops-bench-restore-", dir=lab.cfg.pg_dir))
        for _ in range(args.repeat):
            seconds, rstate = timed(
                lambda: restore_verify(
                    RestoreVerifyParams(topology=topo_path, label=label, notify=False), return_state=True
                )
            )
            checked = rstate.result()
            assert checked.passed, checked.error
            run_r.append(seconds)
            profiles["restore verification"].append((seconds, rstate))
            bare_r.append(bare_restore(lab, label, work))
        # A small change, an incremental backup, then a point in time after it.
        primary = sql_node_at(pglab.conninfo(lab.cfg, LAB_PRIMARY))
        primary.query("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 10000")
        incr = backup(BackupParams(topology=topo_path, backup_type="incr", repos=["eu"], verify=False, notify=False))
        target = primary.query("SELECT clock_timestamp()::text AS t")[0]["t"]
        primary.query("CREATE TABLE IF NOT EXISTS bench_after_target (id int)")
        driver.check()  # the WAL past the target is archived
        pitr_s, pitr = timed(
            lambda: restore_verify(
                RestoreVerifyParams(topology=topo_path, target_type="time", target=target, notify=False)
            )
        )
        info = {b.label: b for b in driver.info(repo=1).backups}
        # Read while the lab's Prefect server still runs.
        where = [line for name, runs in profiles.items() for line in profile(name, *min(runs, key=lambda r: r[0]))]

    full, inc = info.get(label), info.get(incr.label or "")
    b, rb = min(bare_b), min(run_b)
    r, rr = min(bare_r), min(run_r)
    print()
    print(f"database ~{args.size_mb} MB (pgbench), best of {args.repeat}, backups from the primary into repo1")
    rows = [
        ("backup (full) wall time", f"{rb:.2f} s", f"{b:.2f} s", f"{rb / b:.2f}", f"{rb - b:+.2f} s", "1.10"),
        ("restore verification", f"{rr:.2f} s", f"{r:.2f} s", f"{rr / r:.2f}", f"{rr - r:+.2f} s", "1.20"),
    ]
    header = ("", "runbook", "bare", "ratio", "overhead", "goal")
    width = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in width), *rows]:
        print("  ".join(c.ljust(width[i]) if i == 0 else c.rjust(width[i]) for i, c in enumerate(row)))
    print(f"point-in-time restore verification to {target}: {pitr_s:.2f} s ({pitr.sentence()})")
    print(
        f"longest write stall (an insert into app_events every 10 ms): during the runbook's backups "
        f"{stall['runbook'] * 1000:.0f} ms, during bare pgbackrest's {stall['bare'] * 1000:.0f} ms; the proof point "
        f"held writes {max(held, default=0):.0f} ms at most (goal: stall under 50 ms)"
    )
    print("\n".join(where))
    for name, bi in (("full", full), ("incr", inc)):
        if bi is not None:
            print(
                f"sizes, {name} {bi.label}: database {mib(bi.size)}, copied {mib(bi.delta)}, "
                f"stored {mib(bi.repo_size)} (compress-type {driver.plan.settings.compress_type}, "
                f"bundle {'y' if driver.plan.settings.bundle else 'n'})"
            )
    verdict(
        script="backup",
        what="backup runbook / bare pgbackrest backup",
        figure=f"{rb / b:.2f}x",
        goal="<= 1.10x",
        met=rb / b <= 1.10,
    )
    verdict(
        script="backup",
        what="backup runbook overhead",
        figure=f"{rb - b:.2f} s",
        goal="< 0.5 s",
        met=rb - b < 0.5,
    )
    verdict(
        script="backup",
        what="restore verification / bare restore+start+count",
        figure=f"{rr / r:.2f}x",
        goal="<= 1.20x",
        met=rr / r <= 1.20,
    )
    verdict(
        script="backup",
        what="longest write stall during a backup",
        figure=f"{stall['runbook'] * 1000:.0f} ms",
        goal="< 50 ms",
        met=stall["runbook"] < 0.05,
    )
    return 0


def profile(name: str, wall: float, state) -> list[str]:
    """Where one runbook run's time went: each task run's start (from the flow run's start) and duration.

    Read back from the Prefect server, so it costs the run nothing; what no task covers is
    the flow's own work (plan, lock, report) and Prefect's bookkeeping between tasks.
    """
    import asyncio

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            run = await client.read_flow_run(state.state_details.flow_run_id)
            flt = FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
            return run, await client.read_task_runs(flow_run_filter=flt)

    run, tasks = asyncio.run(read())
    if run.start_time is None or run.end_time is None:
        return []
    flow_s = (run.end_time - run.start_time).total_seconds()
    lines = [f"where the {name} runbook's time went (its best run: {wall:.2f} s wall, {flow_s:.2f} s in the flow run):"]
    for t in sorted((t for t in tasks if t.start_time and t.end_time), key=lambda t: t.start_time):
        at = (t.start_time - run.start_time).total_seconds()
        lines.append(f"  {t.name:<38} at {at:6.2f} s  {(t.end_time - t.start_time).total_seconds():6.2f} s")
    return lines


if __name__ == "__main__":
    sys.exit(main())
