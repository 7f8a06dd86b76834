"""The skeleton and the sizes hold: every runbook opens a RunbookRun, one builder of run links, small modules.

Read from the source (nothing is imported), so a new flow or a grown module fails here
before review has to notice it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("regionops", "flows", "tasks", "deployments", "bench")
MAX_MODULE_LINES = 500
MAX_DRILL_FLOW_LINES = 350


def _flow_modules() -> list[Path]:
    """The modules of flows/ that define a Prefect flow (a function decorated with ``@flow``)."""
    found = []
    for path in sorted((ROOT / "flows").glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names = [d.func if isinstance(d, ast.Call) else d for d in node.decorator_list]
                if any(isinstance(n, ast.Name) and n.id == "flow" for n in names):
                    found.append(path)
                    break
    return found


def test_the_flow_finder_sees_every_runbook() -> None:
    names = {p.stem for p in _flow_modules()}
    assert {"failover", "switchover", "dr_drill", "release", "region_health", "restore_verify"} <= names


@pytest.mark.parametrize("path", _flow_modules(), ids=lambda p: p.stem)
def test_every_runbook_opens_a_runbook_run(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "RunbookRun"
    ]
    assert calls, f"{path.relative_to(ROOT)} defines a flow but never opens a RunbookRun"


def test_one_builder_of_a_runs_ui_link() -> None:
    builders = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in ("regionops", "flows", "tasks")
        for path in sorted((ROOT / package).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if "/runs/" in line
    ]
    # PrefectSettings.run_link: every report, alert, CLI line and node step links a (flow or task) run through it.
    assert len(builders) == 1 and builders[0].startswith("regionops/topology.py:"), builders


def test_no_module_over_the_size_limit() -> None:
    big = {
        str(path.relative_to(ROOT)): lines
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert big == {}, f"modules over {MAX_MODULE_LINES} lines: split them by what they are"


def test_the_drill_flow_stays_orchestration() -> None:
    lines = len((ROOT / "flows" / "dr_drill.py").read_text().splitlines())
    assert lines < MAX_DRILL_FLOW_LINES, f"flows/dr_drill.py has {lines} lines: move parts into regionops/runbook/"
