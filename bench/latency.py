"""Benchmark: the seed's success metric, "reduced latency for users in target regions", measured.

On a private lab with ``--wan realistic`` (or ``--wan scaled:F``), a client inside each
region's namespace (a user of that region) makes, ``--requests`` times each:

- a read through its own region's app (served by the region's own replica),
- the same read through the primary's region's app (what a single-region deployment gives it),
- a write through its own region's app (which crosses to the writer).

It prints p50 and p95 per region and kind, and the ratio of the remote read to the local
one: how much closer the regional replica brings a user.

    python bench/latency.py --requests 30 [--wan realistic] [--lab-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from regionops.lab.lab import Lab  # noqa: E402

# Run inside a region's namespace: time N requests of each kind, print the seconds as JSON.
CLIENT = r"""
import json, sys, time, urllib.request
local, remote, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def timed(url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as r:
        answer = json.loads(r.read())
    return time.perf_counter() - t, answer
_, row = timed(local + "/write", {"payload": "latency bench"})
time.sleep(1)
out = {"read here": [], "read in the primary's region": [], "write": []}
for _ in range(n):
    out["read here"].append(timed(f"{local}/read?id={row['id']}")[0])
    out["read in the primary's region"].append(timed(f"{remote}/read?id={row['id']}")[0])
    out["write"].append(timed(local + "/write", {"payload": "latency bench"})[0])
print(json.dumps(out))
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--wan", default="realistic")
    parser.add_argument("--lab-dir", help="an existing lab with a WAN (default: a private one, removed afterwards)")
    args = parser.parse_args()
    private = args.lab_dir is None
    lab_dir = Path(args.lab_dir) if args.lab_dir else Path(tempfile.mkdtemp(prefix="regionops-bench-latency-"))
    os.chmod(lab_dir, 0o755)
    lab = Lab.open(lab_dir, free_ports=True, wan=args.wan if private else None)
    try:
        lab.up(progress=lambda m: None, with_prefect=False, with_monitoring=False)
        plan = lab.cfg.wan_plan()
        if plan is None:
            print("this lab has no WAN: make it with --wan realistic", file=sys.stderr)
            return 1
        primary_region = "eu"
        remote = f"http://{lab.cfg.region_host(primary_region)}:{lab.cfg.ports.apps[primary_region]}"
        print(f"WAN {lab.cfg.wan}; primary in {primary_region}; {args.requests} requests of each kind per region")
        print(f"{'region':<6} {'kind':<30} {'p50 ms':>8} {'p95 ms':>8}")
        for region in plan.regions:
            local = f"http://{lab.cfg.region_host(region)}:{lab.cfg.ports.apps[region]}"
            argv = ["ip", "netns", "exec", plan.netns(region), sys.executable, "-c", CLIENT]
            proc = subprocess.run([*argv, local, remote, str(args.requests)], capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{region}: client failed: {proc.stderr.strip()[-300:]}", file=sys.stderr)
                return 1
            timings = json.loads(proc.stdout)
            for kind, values in timings.items():
                p50, p95 = percentile(values, 50) * 1000, percentile(values, 95) * 1000
                print(f"{region:<6} {kind:<30} {p50:>8.1f} {p95:>8.1f}")
            here = percentile(timings["read here"], 50)
            there = percentile(timings["read in the primary's region"], 50)
            print(f"{region:<6} {'remote read / local read (p50)':<30} {there / here:>8.1f}x")
        return 0
    finally:
        if private:
            lab.down(progress=lambda m: None, purge=True)


if __name__ == "__main__":
    raise SystemExit(main())
