"""Work pools and the deployments their workers run: one process pool per region.

    python -m deployments.workers --topology .lab/topology.yaml [--runbooks]

Creates every region's work pool (``regions.<r>.work_pool``, type process) when missing
and, with ``--runbooks``, deploys every runbook deployment of prefect.yaml on the pool
prefect.yaml names, from this checkout (no schedules or alert triggers: in the lab those
stay with the served deployments of :mod:`deployments.serve`, so one alert starts one
run).  Production uses ``prefect deploy --all`` for the runbooks.  Node steps need no
deployment: each region's executor serves them (:mod:`regionops.node.executor`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, cast

import yaml
from prefect import Flow, get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists

from regionops.topology import Topology, load_topology

REPO = Path(__file__).resolve().parents[1]


def ensure_pools(topology: Topology) -> list[str]:
    """Create each region's process work pool if it does not exist; return the pool names."""
    pools = sorted({r.work_pool for r in topology.regions.values()})
    with get_client(sync_client=True) as client:
        for name in pools:
            try:
                client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            except ObjectAlreadyExists:
                pass
    return pools


def _flow_from_source(source: Path, entrypoint: str) -> Flow[..., Any]:
    # Called from sync code: Flow.from_source returns the flow (its stub says "or a coroutine").
    return cast("Flow[..., Any]", Flow.from_source(source=str(source), entrypoint=entrypoint))


def deploy_runbooks(source: Path = REPO) -> list[str]:
    """prefect.yaml's runbook deployments on their pools, from ``source``, without schedules or triggers."""
    doc: dict[str, Any] = yaml.safe_load((REPO / "prefect.yaml").read_text())
    names = []
    for spec in doc["deployments"]:
        flow = _flow_from_source(source, spec["entrypoint"])
        flow.deploy(
            name=spec["name"],
            work_pool_name=spec["work_pool"]["name"],
            tags=list(spec.get("tags", [])),
            description=spec.get("description"),
            parameters=spec.get("parameters") or {},
            print_next_steps=False,
            build=False,
            push=False,
        )
        names.append(f"{flow.name}/{spec['name']}")
    return names


def main() -> None:
    """Create the pools and deploy (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", required=True)
    parser.add_argument("--runbooks", action="store_true", help="also deploy prefect.yaml's runbooks to their pools")
    args = parser.parse_args()
    topology = load_topology(args.topology)
    print("pools:", ", ".join(ensure_pools(topology)))
    if args.runbooks:
        print("deployed:", ", ".join(deploy_runbooks()))


if __name__ == "__main__":
    main()
