"""The lab's fault injector: real faults on the lab's own processes and data directories.

Used by the DR drill (through :func:`regionops.fault_injectors.fault_injector_for`), by
the tests, and by a person: ``regionops lab fault NAME [--node N]`` and
``regionops lab heal``.
"""

from __future__ import annotations

import shutil
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

from regionops.drivers.pgtools import PgCtl, kill_instance, signal_instance
from regionops.drivers.postgres import conninfo_for, observer_for
from regionops.errors import ConfigurationError
from regionops.ha.fencing import FenceStore
from regionops.lab.processes import running_pid, stop
from regionops.model.faults import FaultInjection, FaultInjectionFailed, FaultName
from regionops.node import LocalNodeOperator
from regionops.topology import Topology

# A data directory "lost" by replica-loss is moved aside under this suffix, not deleted:
# a drill pointed at the wrong lab must never destroy data for good.
LOST_MARK = ".lost-"


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

    # -- the protocol -------------------------------------------------------------------
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
        if fault == "region-outage":
            region = self.topology.node(cluster, node).region
            if running_pid(self.lab_dir, f"app-{region}") is None:
                raise FaultInjectionFailed(f"cannot inject region-outage into {region}: its app is not running")
            return f"would kill {node} (SIGKILL) and stop app {region}"
        verbs = {
            "primary-crash": "kill {n} (SIGKILL)",
            "primary-freeze": "freeze {n} (SIGSTOP)",
            "replica-loss": "kill {n} (SIGKILL) and move its data directory aside",
        }
        return "would " + verbs[fault].format(n=node)

    def inject(self, fault: FaultName, cluster: str, node: str | None) -> FaultInjection:
        started = time.monotonic()
        if fault == "planned-switchover":
            return self._result(fault, cluster, node, started, "planned-switchover: no fault injected", changed=False)
        self.check(fault, cluster, node)
        assert node is not None
        ctl = self._pgctl(cluster, node)
        at = datetime.now(UTC)
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
        if fault == "region-outage" and node:
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
