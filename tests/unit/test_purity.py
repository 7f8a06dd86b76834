"""Decisions and observed-state models stay pure: importing them loads no driver library nor Prefect."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("psycopg", "boto3", "botocore", "httpx", "prefect", "slack_sdk")


def test_decisions_and_model_import_no_driver_and_no_prefect() -> None:
    # A fresh interpreter: this test process has imported everything already.
    code = (
        "import json, sys\n"
        "import regionops.decisions, regionops.model\n"
        "import regionops.decisions.drill, regionops.decisions.release, regionops.decisions.traffic\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(FORBIDDEN)!r}))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
