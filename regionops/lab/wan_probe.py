"""Round trips measured from inside a region: run in its namespace by :func:`regionops.lab.network.measure_rtts`.

Reads ``{"targets": {region: [host, port]}, "password": ..., "samples": N}`` on stdin and
prints ``{region: milliseconds or null}``: the fastest of N ``SELECT 1`` on one connection.
"""

from __future__ import annotations

import json
import sys
import time

from regionops.drivers.postgres import ConnInfo, connect
from regionops.errors import RunbookError


def round_trip_ms(host: str, port: int, password: str | None, samples: int) -> float | None:
    """The fastest ``SELECT 1`` round trip to ``host:port`` in milliseconds (None when it does not answer)."""
    try:
        with connect(ConnInfo(host, port, "postgres", "postgres", password), connect_timeout=5) as conn:
            best = None
            for _ in range(samples):
                started = time.perf_counter()
                conn.execute("SELECT 1").fetchone()
                elapsed = (time.perf_counter() - started) * 1000
                best = elapsed if best is None else min(best, elapsed)
            return best
    except RunbookError:
        return None


def main() -> None:
    job = json.load(sys.stdin)
    out = {
        region: round_trip_ms(host, int(port), job.get("password"), int(job.get("samples", 5)))
        for region, (host, port) in job["targets"].items()
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
