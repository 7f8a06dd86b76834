"""The pgBackRest half of ``bench/backup.py --engine pgbackrest``: the driver against bare pgbackrest.

On a private lab filled with pgbench data, from one run:

- backup: bare ``pgbackrest --config=<eu-1's> --stanza=core --type=full backup`` against
  the driver's ``PgBackRest.backup("full")`` (same config, same repository; the driver adds
  building the command, the run through the runner and reading the label from its log) and
  against the backup runbook (``backup_type=full``, repo1 only, no verify: it adds the node
  seam, observing the nodes, the fingerprint point and ``check``, ``expire``, the report);
- point-in-time restore: the driver's ``restore(type=time)`` into a scratch directory,
  started, promoted at the target and the rows counted.

Wall times and the ratio are printed; timing goals live here, not in the tests.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from regionops.drivers.pgbackrest import PgBackRest
from regionops.drivers.pgconf import set_auto_conf, write_hba
from regionops.drivers.pgtools import as_user
from regionops.drivers.postgres import ConnInfo, SqlNode
from regionops.lab.config import LAB_CLUSTER, LAB_PRIMARY
from regionops.lab import pglab
from regionops.waiting import poll_until


def _timed(fn):
    started = time.monotonic()
    result = fn()
    return time.monotonic() - started, result


def run(lab, repeat: int = 2) -> int:
    """Measure and print; the lab is already filled."""
    from regionops.backup.scratch import free_port, prepare_empty_dir, remove_dir, start_instance

    topo = lab.topology()
    driver = PgBackRest.for_node(topo, LAB_CLUSTER, LAB_PRIMARY)
    argv = driver.argv("backup", "--type=full", "--repo=1")
    from flows.backup import BackupParams, backup

    runbook_params = BackupParams(topology=str(lab.cfg.topology_path), backup_type="full", repos=["eu"],
                                  verify=False, notify=False)
    bare, ours, runbook = [], [], []
    result = None
    for i in range(repeat):
        # Rotate who goes first: the second backup of a round meets the first one's WAL still archiving.
        order = ("bare", "driver", "runbook")[i % 3:] + ("bare", "driver", "runbook")[:i % 3]
        print(f"round {i + 1}/{repeat}: {', then '.join(order)} backup ...", flush=True)
        for who in order:
            if who == "bare":
                seconds, _ = _timed(lambda: subprocess.run(as_user(argv, lab.cfg.os_user), check=True, cwd="/",
                                                           capture_output=True))
                bare.append(seconds)
            elif who == "driver":
                seconds, result = _timed(lambda: driver.backup("full"))
                ours.append(seconds)
            else:
                seconds, _ = _timed(lambda: backup(runbook_params))
                runbook.append(seconds)
    primary = SqlNode(pglab.conninfo(lab.cfg, LAB_PRIMARY))
    target = primary.query("SELECT clock_timestamp()::text AS t")[0]["t"]
    primary.query("CREATE TABLE IF NOT EXISTS bench_after_target (id int)")
    driver.check()
    scratch = Path(tempfile.mkdtemp(prefix="regionops-bench-pitr-", dir=lab.cfg.pg_dir))
    scratch.chmod(0o755)
    data_dir = scratch / "data"
    try:
        started = time.monotonic()
        prepare_empty_dir(data_dir, lab.cfg.os_user)
        restore = driver.restore(data_dir, target_type="time", target=target)
        port = free_port()
        set_auto_conf(data_dir, {"port": str(port), "listen_addresses": "127.0.0.1", "unix_socket_directories": "",
                                 "primary_conninfo": None, "primary_slot_name": None}, lab.cfg.os_user)
        write_hba(data_dir, ["host all postgres 127.0.0.1/32 trust"], lab.cfg.os_user)
        start_instance(data_dir, scratch / "pg.log", lab.cfg.os_user)
        node = SqlNode(ConnInfo("127.0.0.1", port, "app", "postgres"))
        poll_until(lambda: not node.query("SELECT pg_is_in_recovery() AS r")[0]["r"], timeout=600, what="promotion")
        rows = node.query("SELECT count(*) AS n FROM pgbench_accounts")[0]["n"]
        pitr = time.monotonic() - started
    finally:
        remove_dir(scratch, lab.cfg.os_user)
        shutil.rmtree(scratch, ignore_errors=True)
    b, o = min(bare), min(ours)
    print()
    print(f"pgBackRest {result.sentence()}")
    print(f"backup wall time: driver {o:.2f} s, bare pgbackrest {b:.2f} s, ratio {o / b:.2f} "
          f"(orchestration overhead {o - b:.2f} s; goal: at most 1.10)")
    rb = min(runbook)
    print(f"backup runbook (full, repo1, no verify): {rb:.2f} s, ratio to bare {rb / b:.2f} (orchestration "
          f"overhead {rb - b:.2f} s: node seam, observing the nodes, fingerprint point + check, expire, report)")
    print(f"point-in-time restore to {target}: {pitr:.2f} s (pgbackrest restore {restore.seconds:.2f} s, "
          f"then start, promote, count {rows} rows)")
    return 0
