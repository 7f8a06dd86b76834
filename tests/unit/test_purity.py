"""What is pure stays pure: importing it loads no driver library nor Prefect.

Pure: the decisions (:mod:`regionops.decisions`, every submodule), the model package
(:mod:`regionops.model`, every submodule), region health (:mod:`regionops.health`), and
what the node seam ships and judges (:mod:`regionops.node.messages`, :mod:`regionops.node.standing`).
That other modules import driver libraries only inside ``regionops/drivers/`` is
checked from the source in ``test_layers.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("psycopg", "boto3", "botocore", "httpx", "prefect", "slack_sdk")
PURE_PACKAGES = ("regionops.decisions", "regionops.model")
PURE_MODULES = ("regionops.health", "regionops.node.messages", "regionops.node.standing")

# Run in a fresh interpreter (this test process has imported everything already).  Each
# pure module is imported in turn; a forbidden library is blamed on the first one that loads it.
_PROBE = """
import importlib, json, pkgutil, sys
forbidden, packages, modules = json.loads(sys.argv[1])
names = list(modules)
for package in packages:
    names.append(package)
    names += [m.name for m in pkgutil.walk_packages(importlib.import_module(package).__path__, package + ".")]
loaded = {}
for name in names:
    before = {m.split(".")[0] for m in sys.modules}
    importlib.import_module(name)
    new = sorted({m.split(".")[0] for m in sys.modules} - before & set(forbidden))
    if new:
        loaded[name] = new
print(json.dumps({"checked": names, "loaded": loaded}))
"""


def _probe() -> dict:
    argument = json.dumps([FORBIDDEN, PURE_PACKAGES, PURE_MODULES])
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, argument], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_pure_modules_import_no_driver_library_and_no_prefect() -> None:
    result = _probe()
    # Guard the walk itself: every decision and model submodule, and health, were imported.
    assert {"regionops.decisions.repair", "regionops.model.state", "regionops.model.faults"} <= set(result["checked"])
    assert "regionops.health" in result["checked"]
    assert result["loaded"] == {}, "pure modules that load a driver library or Prefect: " + json.dumps(result["loaded"])


def test_the_lab_and_the_cli_load_without_prefect() -> None:
    """``regionops demo`` and ``regionops run`` point Prefect at the lab after ``lab up``.

    Prefect reads PREFECT_API_URL when it is imported: if starting the lab imported it
    first, the runbook would run against a temporary server instead of the lab's.
    """
    code = "import sys, regionops.cli, regionops.lab.lab; print('prefect' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
