"""One way for every benchmark to print a speed goal against its figure, and `make bench`'s summary.

Each bench script calls :func:`verdict` once per goal it measures.  The line it prints
reads on its own ("goal: <what>: <figure> against <goal>: met"); when
``REGIONOPS_BENCH_GOALS`` names a file (``make bench`` sets it), the verdict is also
appended there as a JSON line, and ``python bench/goals.py FILE`` prints the table of
every goal with met / not met at the end of the run.  A script that crashed before its
verdict leaves its goals out of the file; the summary names the scripts it expected and
did not hear from, so a missing figure never reads as met.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

GOALS_FILE_ENV = "REGIONOPS_BENCH_GOALS"


def verdict(script: str, what: str, figure: str, goal: str, met: bool) -> bool:
    """Print one goal's line and record it for the summary; returns ``met``."""
    word = "met" if met else "NOT MET"
    print(f"goal: {what}: {figure} against {goal}: {word}", flush=True)
    target = os.environ.get(GOALS_FILE_ENV)
    if target:
        line = {"script": script, "what": what, "figure": figure, "goal": goal, "met": met}
        with open(target, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")
    return met


def summary(path: Path, expected: list[str]) -> int:
    """Print every recorded goal with met / not met; exit status 1 when a script recorded nothing."""
    rows = []
    if path.exists():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    print("\nspeed goals (bench/, one run each):")
    width = max([len(r["what"]) for r in rows] + [10])
    for row in rows:
        word = "met" if row["met"] else "NOT MET"
        print(f"  {row['what']:<{width}}  {row['figure']:>14}  goal {row['goal']:<18} {word}")
    heard = {r["script"] for r in rows}
    silent = [s for s in expected if s not in heard]
    for script in silent:
        print(f"  {script}: no figure (the script failed before measuring): NOT MET")
    met = sum(1 for r in rows if r["met"])
    print(f"{met} of {len(rows) + len(silent)} goals met")
    return 1 if silent else 0


if __name__ == "__main__":
    sys.exit(summary(Path(sys.argv[1]), sys.argv[2:]))
