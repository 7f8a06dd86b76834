"""The lab's regional workers: the work pools, their deployments and one process worker per region.

Node steps run on the node's region pool (:mod:`regionops.node`); in the lab each region's
worker is a process on this machine with ``REGIONOPS_REGION`` set.  ``regionops lab up``
starts them; test fixtures start them where a test needs them.
"""

from __future__ import annotations

import os
import subprocess
from functools import partial
from pathlib import Path

from regionops.errors import ExternalSystemError
from regionops.lab.component import ComponentStatus, LabComponent, Observation, Progress
from regionops.lab.config import LAB_REGIONS
from regionops.lab.prefect_server import lab_env, prefect_bin, prefect_healthy, prefect_post
from regionops.lab.processes import running_pid, spawn, stop
from regionops.lab.wan import in_namespace
from regionops.topology import load_topology
from regionops.waiting import poll_until


class LabWorkers(LabComponent):
    """One Prefect process worker per region pool (``worker-eu``, ...)."""

    def process_names(self) -> list[str]:
        """The lab's worker process names (whether running or not)."""
        return [f"worker-{r}" for r in LAB_REGIONS]

    def env(self, region: str) -> dict[str, str]:
        """A region's worker environment: its region, the topology, the API, the shared result storage."""
        return {
            # The API at the ops site, and the shared result storage node steps persist their typed results in.
            **lab_env(self.cfg),
            "REGIONOPS_REGION": region,
            "PREFECT_LOGGING_LEVEL": "INFO",  # the runbook's steps reach the UI
            # Poll every second: a node step should not wait 10 s for its worker.
            "PREFECT_WORKER_QUERY_SECONDS": "1",
        }

    def start(self, progress: Progress = print, regions: list[str] | None = None, deploy: bool = True) -> None:
        """Pools and deployments (``deployments.workers``), then one process worker per region (idempotent)."""
        topo = load_topology(self.cfg.topology_path)
        self.cfg.path("results").mkdir(parents=True, exist_ok=True)
        if deploy:
            out = subprocess.run(
                [self.python, "-m", "deployments.workers", "--topology", str(self.cfg.topology_path), "--runbooks"],
                env={**os.environ, **lab_env(self.cfg)},
                capture_output=True,
                text=True,
                timeout=300,
                cwd=str(Path(__file__).resolve().parents[2]),
            )
            if out.returncode != 0:
                raise ExternalSystemError("deploying to the work pools failed: " + out.stderr.strip()[-800:])
        started = []
        for region in regions or list(topo.regions):
            name = f"worker-{region}"
            if running_pid(self.cfg.lab_dir, name):
                continue
            pool = topo.regions[region].work_pool
            # In a lab with a WAN the worker runs in its region's namespace: the runbooks it
            # starts reach nodes, buckets and the control plane across the WAN from there.
            argv = [prefect_bin(self.python), "worker", "start", "--pool", pool, "--type", "process"]
            spawn(
                self.cfg.lab_dir,
                name,
                in_namespace(self.cfg.netns(region), [*argv, "--name", f"lab-{region}"]),
                env=self.env(region),
            )
            started.append(region)
        for region in started:
            poll_until(
                partial(self._online, region),
                timeout=60,
                interval=0.5,
                what=f"the {region} worker to report to Prefect",
            )

    def stop_region(self, region: str) -> bool:
        """Stop one region's worker (a gone worker, for tests and drills)."""
        return stop(self.cfg.lab_dir, f"worker-{region}")

    def _online(self, region: str) -> bool:
        pid = running_pid(self.cfg.lab_dir, f"worker-{region}")
        if pid is None:
            tail = self.cfg.path("logs", f"worker-{region}.log").read_text(errors="replace").splitlines()[-5:]
            raise ExternalSystemError(f"the {region} worker exited during start-up: " + " | ".join(tail))
        pool = load_topology(self.cfg.topology_path).regions[region].work_pool
        workers = prefect_post(self.cfg, f"work_pools/{pool}/workers/filter") or []
        return any(w.get("name") == f"lab-{region}" and w.get("status") == "ONLINE" for w in workers)

    def status(self, seen: Observation) -> list[ComponentStatus]:
        """One line per running worker (not required: the lab runs runbooks without them)."""
        topo = seen.topology
        prefect_ok = prefect_healthy(self.cfg)
        comps = []
        for name in self.process_names():
            if running_pid(self.cfg.lab_dir, name) is None:
                continue
            region = name.removeprefix("worker-")
            pool = topo.regions[region].work_pool if topo else None
            online = prefect_ok and self._online(region)
            comps.append(
                ComponentStatus(
                    name=f"worker {region}",
                    endpoint=pool or "",
                    running=True,
                    healthy=online,
                    required=False,
                    detail=f"process worker of pool {pool or '?'} (REGIONOPS_REGION={region}); "
                    + ("online" if online else "not reporting"),
                )
            )
        return comps
