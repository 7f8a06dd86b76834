"""Serve every runbook as a deployment of the lab's Prefect server, so the UI can start them.

    python -m deployments.serve --topology .lab/topology.yaml

Runs in the foreground (the lab starts it as a process).  Production uses prefect.yaml
and one worker per region's work pool instead; the deployments are the same runbooks.
The lab has both: these served ``<runbook>/lab`` deployments carry the lab's schedules and
alert triggers and start quickly in-process; its regional workers run the node-operation
deployments and prefect.yaml's runbook deployments on their pools (deployments/workers.py).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from prefect import serve

from flows.registry import RUNBOOKS

log = logging.getLogger(__name__)

# Schedules the lab serves with (production's live in prefect.yaml).
LAB_SCHEDULES: dict[str, dict[str, Any]] = {
    "region-health": {"interval": 300},
}


def lab_deployments(topology_path: str) -> list[Any]:
    """One deployment per runbook, with the lab's topology as the default parameter."""
    deployments = []
    for rb in RUNBOOKS.values():
        flow, _ = rb.load()
        extra: dict[str, Any] = dict(LAB_SCHEDULES.get(rb.name, {}))
        triggers = _triggers_for(rb.name, topology_path)
        if triggers:
            extra["triggers"] = triggers
        deployments.append(
            flow.to_deployment(
                name="lab",
                parameters={"params": {"topology": topology_path}},
                description=f"{rb.summary} (lab)",
                tags=["regionops", "lab"],
                **extra,
            )
        )
    return deployments


def _triggers_for(runbook: str, topology_path: str) -> list[Any]:
    """Alert triggers for a runbook (most have none).

    The topology is repeated in the trigger's parameters because Prefect merges a
    triggered run's parameters with the deployment's at the top level only.
    """
    from deployments.triggers import triggers_for

    return list(triggers_for(runbook, {"topology": topology_path}))


def main() -> None:
    """Serve the lab's deployments until stopped."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", required=True)
    args = parser.parse_args()
    serve(*lab_deployments(args.topology), limit=4)


if __name__ == "__main__":
    main()
