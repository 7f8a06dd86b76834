"""What every part of the lab is: a component that starts, stops and reports its status.

The lab (:class:`regionops.lab.lab.Lab`) is a facade over components (PostgreSQL, the
AWS server, the Slack sink, the apps, Prefect, the runbook deployments, the alert
receiver, monitoring, the regional workers).  Each one starts what of it is not running
(idempotent), stops the processes it started, and reports one :class:`ComponentStatus`
line per process.  Status lines that depend on region health's verdict read it from the
:class:`Observation` the lab makes once per ``status``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel

from regionops.drivers.postgres import NodeState
from regionops.health import RegionHealthReport
from regionops.lab.config import LabConfig
from regionops.lab.processes import http_ok, port_open, running_pid, spawn, stop, wait_for_port
from regionops.lab.wan import in_namespace
from regionops.topology import Topology

Progress = Callable[[str], None]
HOST = "127.0.0.1"


class ComponentStatus(BaseModel):
    """One line of ``lab status``."""

    name: str
    endpoint: str
    running: bool
    healthy: bool
    detail: str
    required: bool = True  # False: reported, but the lab is healthy without it (monitoring not installed)


@dataclass(frozen=True)
class Observation:
    """The lab as ``status`` saw it once: the topology, every node, the fences and region health's report."""

    topology: Topology | None = None
    states: dict[str, NodeState] = field(default_factory=dict)
    fenced: set[str] = field(default_factory=set)
    report: RegionHealthReport | None = None

    def problems_about(self, subject: str) -> list[str]:
        """Region health's problems whose subject is ``subject`` (a node, ``app eu``, a bucket, a record)."""
        return [p.message for p in self.report.problems if p.subject == subject] if self.report else []


class LabComponent:
    """One part of the lab, in the lab's directory; subclasses say what it runs and how it is healthy."""

    def __init__(self, cfg: LabConfig):
        self.cfg = cfg

    @property
    def python(self) -> str:
        """The interpreter the lab's own servers run with (this one)."""
        return sys.executable

    def process_names(self) -> list[str]:
        """Every process this component may have started (whether running or not)."""
        return []

    def start(self, progress: Progress) -> None:
        """Start whatever of this component is not running yet."""
        raise NotImplementedError

    def stop(self, progress: Progress) -> None:
        """Stop this component's processes, saying which were running."""
        for name in self.process_names():
            if stop(self.cfg.lab_dir, name):
                progress(f"stopped {name}")

    def status(self, seen: Observation) -> list[ComponentStatus]:
        """This component's lines of ``lab status``."""
        raise NotImplementedError

    def start_process(
        self,
        name: str,
        argv: list[str],
        port: int,
        timeout: float = 30,
        env: dict[str, str] | None = None,
        region: str | None = None,
        host: str | None = None,
    ) -> None:
        """Start the process ``name`` serving on ``port`` unless it runs and answers already.

        With ``region`` (in a lab with a WAN) it runs inside that region's namespace and
        serves on the region's address; ``host`` names another address it serves on.
        """
        host = host or (self.cfg.region_host(region) if region else HOST)
        if running_pid(self.cfg.lab_dir, name) and port_open(port, host):
            return
        stop(self.cfg.lab_dir, name)
        netns = self.cfg.netns(region) if region else None
        pid = spawn(self.cfg.lab_dir, name, in_namespace(netns, argv), env=env)
        wait_for_port(port, timeout=timeout, what=name, pid=pid, log=self.cfg.path("logs", f"{name}.log"), host=host)


def indented(progress: Progress) -> Progress:
    """Progress lines of one step of ``up``, indented under its title."""
    return lambda m: progress(f"      {m}")


def http_service_status(name: str, endpoint: str, port: int, health_url: str, ok_detail: str) -> ComponentStatus:
    """A loopback HTTP service's status line: running when its port is open, healthy when ``health_url`` answers."""
    ok = http_ok(health_url)
    return ComponentStatus(
        name=name, endpoint=endpoint, running=port_open(port), healthy=ok, detail=ok_detail if ok else "not answering"
    )
