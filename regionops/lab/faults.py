"""The lab's fault injector: real faults on the lab's own processes and data directories.

Used by the DR drill (through :func:`regionops.fault_injectors.fault_injector_for`), by
the tests, and by a person: ``regionops lab fault NAME [--node N]`` and
``regionops lab heal``.
"""

from __future__ import annotations

import functools
import shutil
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from regionops.drivers.pgtools import PgCtl, kill_instance, signal_instance
from regionops.drivers.postgres import conninfo_for, observer_for
from regionops.errors import ConfigurationError
from regionops.ha.fencing import FenceStore
from regionops.lab.processes import running_pid, stop
from regionops.lab.wan import host_network
from regionops.model.faults import REGION_WIDE_FAULTS, FaultInjection, FaultInjectionFailed, FaultName
from regionops.node import LocalNodeOperator
from regionops.topology import Topology

T = TypeVar("T")
# A data directory "lost" by replica-loss is moved aside under this suffix, not deleted:
# a drill pointed at the wrong lab must never destroy data for good.
LOST_MARK = ".lost-"


def _on_host(method: Callable[..., T]) -> Callable[..., T]:
    """Run a lab hand on the host's network (a drill may call it from the ops site's namespace)."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        with host_network():
            return method(*args, **kwargs)

    return wrapper


class LabFaultInjector:
    """Kills, freezes and breaks lab nodes; stops and restarts lab apps."""

    def __init__(self, topology: Topology, lab_dir: str | Path):
        self.topology = topology
        self.lab_dir = Path(lab_dir)

    # -- helpers ----------------------------------------------------------------------
    def _pgctl(self, cluster: str, node: str) -> PgCtl:
        return LocalNodeOperator(self.topology, cluster).pgctl(node)

    def _result(
        self,
        fault: FaultName,
        cluster: str,
        node: str | None,
        started: float,
        detail: str,
        changed: bool = True,
        at: datetime | None = None,
    ) -> FaultInjection:
        region = self.topology.node(cluster, node).region if node else None
        return FaultInjection(
            fault=fault,
            cluster=cluster,
            node=node,
            region=region,
            at=at or datetime.now(UTC),
            changed=changed,
            detail=detail,
            seconds=round(time.monotonic() - started, 2),
        )

    def _signal(self, ctl: PgCtl, sig: signal.Signals) -> int:
        return signal_instance(ctl, sig)

    def _wan_lab(self):  # noqa: ANN202 - a Lab (imported here: the lab imports this module's neighbours)
        """The lab, when its regions are namespaces (region faults then act on the whole region), else None."""
        from regionops.lab.lab import Lab

        lab = Lab.open(self.lab_dir)
        return lab if lab.cfg.wan_plan() is not None else None

    # -- the protocol -------------------------------------------------------------------
    @_on_host
    def check(self, fault: FaultName, cluster: str, node: str | None) -> str:
        if fault == "planned-switchover":
            return "planned-switchover injects no fault: the switchover runbook is the action"
        if node is None:
            raise FaultInjectionFailed(f"fault {fault} needs a node")
        ctl = self._pgctl(cluster, node)
        if ctl.postmaster_pid() is None:
            raise FaultInjectionFailed(f"cannot inject {fault} into {node}: its PostgreSQL is not running")
        if ctl.is_frozen():
            raise FaultInjectionFailed(f"cannot inject {fault} into {node}: it is frozen already (run `lab heal`)")
        if fault in REGION_WIDE_FAULTS:
            region = self.topology.node(cluster, node).region
            if running_pid(self.lab_dir, f"app-{region}") is None:
                raise FaultInjectionFailed(f"cannot inject {fault} into {region}: its app is not running")
            wan = self._wan_lab()
            if fault == "region-partition" and wan is None:
                raise FaultInjectionFailed(
                    "region-partition needs a lab whose regions are namespaces: "
                    "`regionops lab down --purge`, then `regionops lab up --wan realistic`"
                )
            if fault == "region-partition":
                return f"would cut every link between {region} and the other regions and the ops site"
            if wan is not None:
                return f"would take region {region} out: kill {node} (SIGKILL), stop everything in it, cut its links"
            return f"would kill {node} (SIGKILL) and stop app {region}"
        verbs = {
            "primary-crash": "kill {n} (SIGKILL)",
            "primary-freeze": "freeze {n} (SIGSTOP)",
            "replica-loss": "kill {n} (SIGKILL) and move its data directory aside",
        }
        return "would " + verbs[fault].format(n=node)

    @_on_host
    def inject(self, fault: FaultName, cluster: str, node: str | None) -> FaultInjection:
        started = time.monotonic()
        if fault == "planned-switchover":
            return self._result(fault, cluster, node, started, "planned-switchover: no fault injected", changed=False)
        self.check(fault, cluster, node)
        assert node is not None
        at = datetime.now(UTC)
        wan = self._wan_lab() if fault in REGION_WIDE_FAULTS else None
        if wan is not None:
            from regionops.lab.region_faults import inject_region_fault

            region = self.topology.node(cluster, node).region
            detail = "; ".join(inject_region_fault(wan, fault, region))
            return self._result(fault, cluster, node, started, detail, at=at)
        ctl = self._pgctl(cluster, node)
        if fault == "primary-freeze":
            n = self._signal(ctl, signal.SIGSTOP)
            return self._result(fault, cluster, node, started, f"froze {node}: SIGSTOP to {n} process(es)", at=at)
        killed = kill_instance(ctl)
        detail = f"killed {node}: SIGKILL to {killed} process(es)"
        if fault == "region-outage":
            region = self.topology.node(cluster, node).region
            stop(self.lab_dir, f"app-{region}", timeout=5)
            detail += f"; stopped app {region} (region {region} is out)"
        elif fault == "replica-loss":
            data = Path(ctl.data_dir)
            aside = data.with_name(f"{data.name}{LOST_MARK}{datetime.now(UTC):%Y%m%dT%H%M%S}")
            data.rename(aside)
            detail += f"; its data directory is gone (moved aside to {aside.name}): resync must re-clone it"
        return self._result(fault, cluster, node, started, detail, at=at)

    @_on_host
    def resume(self, fault: FaultName, cluster: str, node: str | None) -> FaultInjection:
        started = time.monotonic()
        notes = []
        if fault == "primary-freeze" and node:
            n = self._signal(self._pgctl(cluster, node), signal.SIGCONT)
            notes.append(
                f"resumed {node}: SIGCONT to {n} process(es)"
                if n
                else f"{node} has no processes left to resume (its fence stopped it)"
            )
        wan = self._wan_lab() if fault in REGION_WIDE_FAULTS else None
        if wan is not None:
            from regionops.lab.region_faults import heal_regions

            notes += heal_regions(wan)
            # What the fault stopped comes back where that is safe: a node is started only
            # when it cannot become a second writable primary (else replica-resync rebuilds it).
            notes += self.heal(cluster)
        if fault in REGION_WIDE_FAULTS and node:
            region = self.topology.node(cluster, node).region
            notes.append(self._start_app(region))
        if fault == "replica-loss" and node:
            notes.append(self._remove_lost(cluster, node))
        if not notes:
            return self._result(fault, cluster, node, started, f"{fault}: nothing to resume", changed=False)
        return self._result(fault, cluster, node, started, "; ".join(notes))

    # -- by hand ---------------------------------------------------------------------------
    def _start_app(self, region: str) -> str:
        if running_pid(self.lab_dir, f"app-{region}"):
            return f"app {region} was running"
        self._start_all_apps()
        return f"started app {region} again"

    def _remove_lost(self, cluster: str, node: str) -> str:
        data = Path(self.topology.node(cluster, node).data_dir)
        if not (data / "PG_VERSION").exists():
            return f"{node} has no data directory yet: run replica-resync to re-clone it"
        lost = sorted(data.parent.glob(f"{data.name}{LOST_MARK}*"))
        for path in lost:
            _remove_tree(path)
        return f"removed {len(lost)} lost data director{'y' if len(lost) == 1 else 'ies'} of {node}"

    @_on_host
    def heal(self, cluster: str) -> list[str]:
        """Undo what the lab's faults left behind, without ever making a second primary.

        Frozen nodes are resumed, stopped apps started, and a stopped node started only
        when that cannot add a writable primary; everything else is named with the
        runbook that repairs it.
        """
        c = self.topology.clusters[cluster]
        notes: list[str] = []
        fences = FenceStore.for_topology(self.topology).fenced(cluster)
        for node in c.nodes:
            ctl = self._pgctl(cluster, node)
            if ctl.is_frozen() and node in fences:
                # Resumed, a fenced old primary would take writes again beside the new one.
                notes.append(
                    f"killed frozen {node} (SIGKILL to {kill_instance(ctl)} process(es)) instead of "
                    f"resuming it: it is fenced ({fences[node].sentence()})"
                )
            elif ctl.is_frozen():
                n = self._signal(ctl, signal.SIGCONT)
                notes.append(f"resumed frozen {node} (SIGCONT to {n} process(es))")
        notes.append(self._start_all_apps())
        observer = observer_for(connect_timeout=2)
        states = {n: observer.observe(n, conninfo_for(c, spec)) for n, spec in c.nodes.items()}
        writable = [n for n, s in states.items() if s.reachable and s.role == "primary" and not s.read_only]
        for node, state in states.items():
            if state.reachable:
                continue
            data = Path(c.nodes[node].data_dir)
            if node in fences:
                notes.append(f"{node} is fenced: left stopped; run `regionops run replica-resync` to rebuild it")
                continue
            if not (data / "PG_VERSION").exists():
                notes.append(f"{node} has no data directory: run `regionops run replica-resync` to re-clone it")
                continue
            fenced = (data / "standby.signal").exists()
            if writable and not fenced:
                notes.append(
                    f"{node} is down and may have been a primary while {', '.join(writable)} is "
                    f"primary now: not started; run `regionops run replica-resync` to rewind it"
                )
                continue
            self._pgctl(cluster, node).start(timeout=120)
            role = "read-only (fenced)" if fenced else "as it last ran"
            notes.append(f"started {node} {role}")
            if not fenced and not writable:
                writable.append(node)
        return notes

    def _start_all_apps(self) -> str:
        missing = [r for r in self.topology.regions if running_pid(self.lab_dir, f"app-{r}") is None]
        if not missing:
            return "every app runs"
        from regionops.lab.config import LabConfig
        from regionops.lab.lab import Lab

        cfg = LabConfig.load(self.lab_dir)
        if cfg is None:
            raise ConfigurationError(f"no lab in {self.lab_dir}")
        Lab(cfg).ensure_processes()
        return f"started app(s) {', '.join(missing)} again"


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def lost_directories(data_dir: Path) -> list[Path]:
    """Data directories a replica-loss moved aside (for clean-up checks)."""
    return sorted(data_dir.parent.glob(f"{data_dir.name}{LOST_MARK}*"))
