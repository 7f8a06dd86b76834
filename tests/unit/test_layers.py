"""The layers hold: driver libraries only in drivers, no upward import, no import circle.

Read from the source with :mod:`ast` (nothing is imported), every ``import`` counted:
top-level ones, and the ones inside functions that exist to put an import off.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("regionops", "flows", "tasks", "deployments")

# The libraries of external systems: only regionops/drivers/ may import them.
DRIVER_LIBRARIES = frozenset({"boto3", "botocore", "psycopg", "psycopg_pool", "httpx", "slack_sdk"})
# Modules outside regionops/drivers/ allowed one of them, each with the reason.  Keep it empty.
DRIVER_LIBRARY_EXCEPTIONS: dict[str, str] = {}

# What the library may not import: the layers above it.
ABOVE_THE_LIBRARY = frozenset({"flows", "tasks", "deployments"})
# Modules of regionops/ that stand above the layers, each with the reason.
UPWARD_EXCEPTIONS: dict[str, str] = {
    "regionops.cli": "the `regionops` command is the entry point on top of everything: `regionops run` runs flows",
}


@dataclass(frozen=True)
class Import:
    """One import statement's target, where it is written."""

    module: str  # the importing module
    target: str  # the imported module, absolute (for ``from m import name``: ``m.name`` if that is a module)
    line: int

    def where(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    """Every module of the project's packages, by dotted name."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute module a (possibly relative) ``from`` import names."""
    if level == 0:
        return name or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _imports_of(module: str, path: Path) -> Iterator[Import]:
    modules = _modules()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, is_package, node.level, node.module)
            submodules = [f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in modules]
            yield from (Import(module, target, node.lineno) for target in submodules)
            if len(submodules) < len(node.names):  # names defined in ``source`` itself
                yield Import(module, source, node.lineno)


@cache
def _all_imports() -> tuple[Import, ...]:
    return tuple(imp for module, path in _modules().items() for imp in _imports_of(module, path))


def _top(name: str) -> str:
    return name.split(".")[0]


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_walk_sees_every_package_and_function_level_imports() -> None:
    # Guards the test itself: a walk that found nothing would pass everything below.
    modules = _modules()
    assert {_top(m) for m in modules} == set(PACKAGES)
    assert "regionops.drivers.postgres" in modules and "regionops.model" in modules
    lazy = ast.parse("def f():\n    from regionops.lab import faults\n")
    assert any(isinstance(n, ast.ImportFrom) for n in ast.walk(lazy))


def test_only_drivers_import_the_libraries_of_external_systems() -> None:
    offenders = [
        imp.where()
        for imp in _all_imports()
        if _top(imp.target) in DRIVER_LIBRARIES
        and not _in(imp.module, "regionops.drivers")
        and imp.module not in DRIVER_LIBRARY_EXCEPTIONS
    ]
    assert offenders == [], "outside regionops/drivers/ (go through a driver):\n" + "\n".join(offenders)


def test_the_library_imports_no_flow_task_or_deployment() -> None:
    offenders = [
        imp.where()
        for imp in _all_imports()
        if _top(imp.module) == "regionops"
        and _top(imp.target) in ABOVE_THE_LIBRARY
        and imp.module not in UPWARD_EXCEPTIONS
    ]
    assert offenders == [], "regionops/ imports a layer above it:\n" + "\n".join(offenders)


def test_drivers_and_the_model_do_not_import_the_lab() -> None:
    # The lab is built on drivers (it runs the local environment); a driver picking the lab is upward.
    offenders = [
        imp.where()
        for imp in _all_imports()
        if (_in(imp.module, "regionops.drivers") or _in(imp.module, "regionops.model"))
        and _in(imp.target, "regionops.lab")
    ]
    assert offenders == [], "a driver or the model imports the lab:\n" + "\n".join(offenders)


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(edges.get(succ, ())))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_circle_finder_finds_a_circle_and_only_one() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_the_library() -> None:
    modules = _modules()
    edges: dict[str, set[str]] = {m: set() for m in modules if _top(m) == "regionops"}
    for imp in _all_imports():
        if imp.module in edges and imp.target in edges and imp.target != imp.module:
            edges[imp.module].add(imp.target)
    circles = _circles(edges)
    assert circles == [], "import circles among regionops/ modules:\n" + "\n".join(" <-> ".join(c) for c in circles)
