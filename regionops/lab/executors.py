"""The lab's node-step executors: one long-lived process per region (:mod:`regionops.node.executor`).

Each stands for the executor on that region's database hosts: it runs with only its
``REGIONOPS_REGION`` and serves only that region's node steps (in a lab with a WAN,
inside the region's namespace, so its steps' connections cross the WAN from there).  ``regionops lab up``
starts them with the Prefect server, because the lab's topology runs node steps through
them (``node_operator: regional``); drills and tests stop one to lose a region's hands.
"""

from __future__ import annotations

from functools import partial

from regionops.errors import ExternalSystemError
from regionops.lab.component import ComponentStatus, LabComponent, Observation, Progress
from regionops.lab.config import LAB_REGIONS
from regionops.lab.prefect_server import lab_env, prefect_healthy, prefect_post
from regionops.lab.processes import running_pid, spawn, stop
from regionops.lab.wan import in_namespace
from regionops.node.messages import step_key
from regionops.waiting import poll_until


class LabExecutors(LabComponent):
    """One node-step executor per region (``executor-eu``, ...)."""

    def process_names(self) -> list[str]:
        """The lab's executor process names (whether running or not)."""
        return [f"executor-{r}" for r in LAB_REGIONS]

    def env(self, region: str) -> dict[str, str]:
        """A region's executor environment: the lab's Prefect settings and its own region.

        In a lab with a WAN it runs inside its region's namespace and reaches the Prefect
        API at the backbone address (the control plane, outside the regions; see :func:`lab_env`).
        """
        return {**lab_env(self.cfg), "REGIONOPS_REGION": region, "PREFECT_LOGGING_LEVEL": "INFO"}

    def start(self, progress: Progress = print, regions: list[str] | None = None) -> None:
        """Start the executors that are not running and wait until each serves its region's steps."""
        started = []
        for region in regions or list(LAB_REGIONS):
            name = f"executor-{region}"
            if running_pid(self.cfg.lab_dir, name):
                continue
            self.cfg.path("results").mkdir(parents=True, exist_ok=True)
            spawn(
                self.cfg.lab_dir,
                name,
                in_namespace(
                    self.cfg.netns(region), [self.python, "-m", "regionops.cli", "executor", "--region", region]
                ),
                env=self.env(region),
            )
            started.append(region)
        for region in started:
            poll_until(
                partial(self.serving, region),
                timeout=60,
                interval=0.3,
                what=f"the {region} executor to subscribe to its node steps",
            )

    def stop_region(self, region: str) -> bool:
        """Stop one region's executor (a region whose hosts no longer act, for tests and drills)."""
        return stop(self.cfg.lab_dir, f"executor-{region}")

    def serving(self, region: str) -> bool:
        """Whether the Prefect server has an executor subscribed to ``region``'s node steps."""
        if running_pid(self.cfg.lab_dir, f"executor-{region}") is None:
            tail = self.cfg.path("logs", f"executor-{region}.log").read_text(errors="replace").splitlines()[-5:]
            raise ExternalSystemError(f"the {region} executor exited: " + " | ".join(tail))
        stem = step_key(region) + "-"
        workers = prefect_post(self.cfg, "task_workers/filter") or []
        return any(any(k.startswith(stem) for k in w.get("task_keys", [])) for w in workers)

    def status(self, seen: Observation) -> list[ComponentStatus]:
        """One line per region: its executor runs and is subscribed (required: node steps go through it)."""
        prefect_ok = prefect_healthy(self.cfg)
        comps = []
        for region in LAB_REGIONS:
            running = running_pid(self.cfg.lab_dir, f"executor-{region}") is not None
            if not prefect_ok and not running:
                continue
            serving = prefect_ok and running and self.serving(region)
            comps.append(
                ComponentStatus(
                    name=f"executor {region}",
                    endpoint=step_key(region),
                    running=running,
                    healthy=serving,
                    required=prefect_ok,
                    detail=f"node steps of region {region} (REGIONOPS_REGION={region}); "
                    + ("serving" if serving else "not subscribed" if running else "not running"),
                )
            )
        return comps
