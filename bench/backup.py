"""Benchmark: the backup and restore-verify runbooks against the raw tools, in the same run.

    .venv/bin/python bench/backup.py --size-mb 1024 [--compression lz4] [--repeat 2]
    .venv/bin/python bench/backup.py --engine pgbackrest --size-mb 256   # the pgBackRest driver vs bare pgbackrest

Starts a private lab (PostgreSQL x3, moto, Prefect server) in a temporary directory,
fills the primary with pgbench data of about ``--size-mb``, then, from the same replica:

- backup: the runbook (pg_basebackup streamed into S3 with checksums, fingerprint point,
  manifest) against raw ``pg_basebackup -Ft -D - -X fetch`` with the same compression
  piped to a local file.  Goal: the runbook within 10% of raw.
- restore verification: the runbook against the raw steps it performs, one after the
  other: download the objects to a file, sha256 it, ``tar -x``, ``pg_verifybackup``,
  ``pg_ctl start -w``, count the rows, stop.

Each measurement is repeated ``--repeat`` times; the best of each is compared.  The lab
is stopped and removed at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")

from regionops.drivers.pgtools import as_user, chown_to, run_tool, tool  # noqa: E402
from regionops.lab.lab import Lab, lab_env  # noqa: E402

PGBENCH_MB_PER_SCALE = 15.5  # pgbench_accounts (100,000 rows per scale) with its index
SUFFIX = {"none": "", "gzip": ".gz", "lz4": ".lz4", "zstd": ".zst"}
TAR_FILTER = {"none": [], "gzip": ["-z"], "lz4": ["--use-compress-program=lz4"],
              "zstd": ["--use-compress-program=zstd"]}


@contextmanager
def private_lab() -> Iterator[Lab]:
    """A lab on free ports in a fresh directory, with Prefect pointed at it; removed afterwards."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    lab_dir = Path(tempfile.mkdtemp(prefix="regionops-bench-lab-"))
    os.chmod(lab_dir, 0o755)
    lab = Lab.open(lab_dir, free_ports=True)
    try:
        print(f"starting a private lab in {lab_dir} ...", flush=True)
        lab.up(progress=lambda m: None, with_prefect=True)
        os.environ.update(lab_env(lab.cfg))
        with temporary_settings(updates={PREFECT_API_URL: lab_env(lab.cfg)["PREFECT_API_URL"]}):
            yield lab
    finally:
        lab.down(progress=lambda m: None, purge=True)


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.monotonic()
    result = fn()
    return time.monotonic() - started, result


def fill(lab: Lab, size_mb: int) -> int:
    """pgbench -i at the scale that gives about ``size_mb``; returns the scale."""
    scale = max(1, round(size_mb / PGBENCH_MB_PER_SCALE))
    port = lab.cfg.ports.postgres["eu-1"]
    print(f"pgbench -i -s {scale} (about {scale * PGBENCH_MB_PER_SCALE:.0f} MB) ...", flush=True)
    run_tool([tool("pgbench"), "-i", "-q", "-s", str(scale), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
              "app"], timeout=3600)
    from regionops.drivers.postgres import SqlNode
    from regionops.lab import pglab

    # A checkpoint lets the replica's next restartpoint move past pgbench's WAL, so both
    # sides stream the database, not the whole history of loading it.
    SqlNode(pglab.conninfo(lab.cfg, "eu-1")).checkpoint()
    return scale


def wait_replicas(lab: Lab) -> None:
    from regionops.drivers.postgres import SqlNode
    from regionops.lab import pglab
    from regionops.waiting import poll_until

    primary = SqlNode(pglab.conninfo(lab.cfg, "eu-1"))
    primary.switch_wal()
    target = primary.current_lsn()
    for node in ("us-1", "apac-1"):
        replica = SqlNode(pglab.conninfo(lab.cfg, node))
        poll_until(lambda r=replica: (r.replay_lsn() or target) >= target, timeout=600, what=f"{node} to catch up")


def raw_backup(lab: Lab, compression: str, out: Path) -> int:
    """Raw pg_basebackup of us-1 to a local file; returns the file's size."""
    argv = [tool("pg_basebackup"), "-h", "127.0.0.1", "-p", str(lab.cfg.ports.postgres["us-1"]), "-U", "postgres",
            "-D", "-", "-F", "t", "-X", "fetch", "-c", "fast", "--no-sync",
            "--compress=none" if compression == "none" else f"--compress=client-{compression}"]
    with out.open("wb") as f:
        subprocess.run(as_user(argv, lab.cfg.os_user), stdout=f, stderr=subprocess.DEVNULL, check=True, cwd="/")
    return out.stat().st_size


def runbook_backup(lab: Lab, compression: str):
    from flows.backup import BackupParams, backup

    return backup(BackupParams(topology=str(lab.cfg.topology_path), compression=compression, copy_to=[],
                               prune=False, notify=False, source="us-1")).manifest


def runbook_verify(lab: Lab, backup_id: str):
    from flows.restore_verify import RestoreVerifyParams, restore_verify

    return restore_verify(RestoreVerifyParams(topology=str(lab.cfg.topology_path), backup_id=backup_id, notify=False))


def raw_restore(lab: Lab, manifest, work: Path) -> dict[str, float]:
    """The steps restore verification performs, by hand, one after the other."""
    from regionops.backup.scratch import free_port
    from regionops.drivers.objectstore import objectstore_for
    from regionops.drivers.pgtools import PgCtl
    from regionops.drivers.postgres import ConnInfo, SqlNode

    os_user = lab.cfg.os_user
    store = objectstore_for(lab.topology())
    bucket = lab.topology().regions[manifest.home_region].bucket
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.chmod(work, 0o755)
    archive, data = work / "base.tar", work / "data"
    times: dict[str, float] = {}
    started = time.monotonic()
    with archive.open("wb") as f:  # download
        for obj in manifest.base_objects:
            for chunk in store.iter_object(bucket, obj.key):
                f.write(chunk)
    times["download"] = time.monotonic() - started
    t = time.monotonic()
    digest = hashlib.sha256()  # sha256sum
    with archive.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    times["sha256"] = time.monotonic() - t
    t = time.monotonic()
    data.mkdir(mode=0o700)
    chown_to(data, os_user)
    os.chmod(archive, 0o644)
    subprocess.run(as_user(["tar", "-x", "-f", str(archive), "-C", str(data), *TAR_FILTER[manifest.compression]],
                           os_user), check=True, cwd="/")
    times["unpack"] = time.monotonic() - t
    t = time.monotonic()
    run_tool([tool("pg_verifybackup"), str(data)], os_user=os_user, timeout=3600)
    times["pg_verifybackup"] = time.monotonic() - t
    t = time.monotonic()
    port = free_port()
    (data / "standby.signal").unlink(missing_ok=True)
    with (data / "postgresql.auto.conf").open("a") as f:
        f.write(f"port = {port}\nprimary_conninfo = ''\nprimary_slot_name = ''\n")
    log = work / "pg.log"
    log.touch()
    chown_to(log, os_user)
    PgCtl(data, os_user, log).start(timeout=600)
    times["start"] = time.monotonic() - t
    t = time.monotonic()
    SqlNode(ConnInfo("127.0.0.1", port, "app", "postgres")).query("SELECT count(*) FROM pgbench_accounts")
    times["count rows"] = time.monotonic() - t
    PgCtl(data, os_user).stop("immediate")
    times["total"] = time.monotonic() - started
    shutil.rmtree(work, ignore_errors=True)
    return times


def mib_s(nbytes: int, seconds: float) -> str:
    return f"{nbytes / 1048576 / max(seconds, 1e-9):.1f} MiB/s"


def main() -> int:
    parser = argparse.ArgumentParser(description="backup and restore-verify runbooks vs the raw tools")
    parser.add_argument("--size-mb", type=int, default=1024, help="database size to create with pgbench (default 1024)")
    parser.add_argument("--compression", choices=list(SUFFIX), default="lz4")
    parser.add_argument("--repeat", type=int, default=2, help="measure each side this many times; best counts")
    parser.add_argument("--engine", choices=["regionops", "pgbackrest"], default="regionops",
                        help="pgbackrest: the pgBackRest driver against bare pgbackrest (bench/pgbackrest_engine.py)")
    args = parser.parse_args()
    if args.engine == "pgbackrest":
        from pgbackrest_engine import run  # noqa: PLC0415 - only this engine needs it

        with private_lab() as lab:
            fill(lab, args.size_mb)
            return run(lab, args.repeat)

    with private_lab() as lab:
        fill(lab, args.size_mb)
        wait_replicas(lab)
        work = Path(tempfile.mkdtemp(prefix="regionops-bench-"))
        os.chmod(work, 0o755)
        raw_times, runbook_times, manifests = [], [], []
        raw_size = 0
        for i in range(args.repeat):
            print(f"round {i + 1}/{args.repeat}: raw pg_basebackup, then the backup runbook ...", flush=True)
            seconds, raw_size = timed(lambda: raw_backup(lab, args.compression, work / f"raw.tar{SUFFIX[args.compression]}"))
            raw_times.append(seconds)
            seconds, manifest = timed(lambda: runbook_backup(lab, args.compression))
            runbook_times.append(seconds)
            manifests.append(manifest)
        manifest = manifests[-1]
        print("restore verification: the runbook, then the raw steps ...", flush=True)
        verify_times, raw_restores = [], []
        for _ in range(args.repeat):
            seconds, verdict = timed(lambda: runbook_verify(lab, manifest.backup_id))
            assert verdict.passed, verdict.error
            verify_times.append(seconds)
            raw_restores.append(raw_restore(lab, manifest, work / "raw-restore"))
        shutil.rmtree(work, ignore_errors=True)

    raw_b, run_b = min(raw_times), min(runbook_times)
    raw_r = min(raw_restores, key=lambda t: t["total"])
    run_r = min(verify_times)
    size = manifest.size_before
    print()
    print(f"database ~{size / 1048576:.0f} MiB (pgbench, --size-mb {args.size_mb}), compression {args.compression}, "
          f"best of {args.repeat}; backups read from replica us-1")
    rows = [
        ("backup wall time", f"{run_b:.2f} s", f"{raw_b:.2f} s", f"{run_b / raw_b:.2f}"),
        ("backup throughput (uncompressed)", mib_s(size, run_b), mib_s(size, raw_b), f"{raw_b / run_b:.2f}"),
        ("backup stored size", f"{manifest.size_after / 1048576:.1f} MiB", f"{raw_size / 1048576:.1f} MiB", ""),
        ("restore-verify wall time", f"{run_r:.2f} s", f"{raw_r['total']:.2f} s", f"{run_r / raw_r['total']:.2f}"),
    ]
    width = [max(len(r[i]) for r in rows + [("", "runbook", "raw", "ratio")]) for i in range(4)]
    header = ("", "runbook", "raw", "ratio")
    for row in [header, tuple("-" * w for w in width), *rows]:
        print("  ".join(cell.ljust(width[i]) if i == 0 else cell.rjust(width[i]) for i, cell in enumerate(row)))
    print("raw restore steps: " + ", ".join(f"{k} {v:.2f} s" for k, v in raw_r.items()))
    print(f"backup runbook / raw pg_basebackup = {run_b / raw_b:.2f} (goal: at most 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
