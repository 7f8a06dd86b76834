"""Fault injection for disaster-recovery drills: the Protocol and the command implementation.

A fault is injected into one node (and, for ``region-outage``, everything of that
node's region).  The lab's implementation acts on the lab's own processes and data
directories (:mod:`regionops.lab.faults`); the ``command`` implementation runs a
templated command per fault from the topology, for production (an SSM document, a
``systemctl stop``, an FIS experiment start), with a timeout and its output kept.
:func:`regionops.fault_injectors.fault_injector_for` picks one (a driver does not import the lab).

Faults:

- ``primary-crash``: the primary's PostgreSQL killed with SIGKILL;
- ``region-outage``: everything of the primary's region stopped (database and app);
- ``primary-freeze``: the primary's processes paused (SIGSTOP); ``resume`` sends SIGCONT;
- ``replica-loss``: a replica's PostgreSQL killed and its data directory made unusable;
- ``planned-switchover``: no fault (the switchover runbook is the action).
"""

from __future__ import annotations

import shlex
import subprocess
import time
from datetime import UTC, datetime
from typing import Protocol

from regionops.errors import ConfigurationError, ExternalSystemError
from regionops.model.faults import FaultInjection, FaultInjectionFailed, FaultName
from regionops.topology import Topology


class FaultInjector(Protocol):
    """Injects and heals drill faults in one environment."""

    def check(self, fault: FaultName, cluster: str, node: str | None) -> str:
        """Say how ``fault`` would be injected into ``node``; raise FaultInjectionFailed if it cannot be."""
        ...

    def inject(self, fault: FaultName, cluster: str, node: str | None) -> FaultInjection:
        """Inject ``fault`` into ``node`` now."""
        ...

    def resume(self, fault: FaultName, cluster: str, node: str | None) -> FaultInjection:
        """Undo what can be undone without a runbook: resume frozen processes, restart stopped apps."""
        ...


def _placeholders(topology: Topology, cluster: str, node: str | None) -> dict[str, str]:
    values = {"cluster": cluster, "node": node or "", "region": "", "host": "", "port": "", "data_dir": ""}
    if node:
        spec = topology.node(cluster, node)
        values |= {"region": spec.region, "host": spec.host, "port": str(spec.port), "data_dir": spec.data_dir}
    return values


class CommandFaultInjector:
    """Runs the topology's command template for each fault (production)."""

    def __init__(self, topology: Topology, runner=subprocess.run):
        self.topology = topology
        self.settings = topology.drills.faults
        self._run = runner

    def _argv(self, templates: dict[str, str], fault: str, cluster: str, node: str | None) -> list[str] | None:
        template = templates.get(fault)
        if template is None:
            return None
        try:
            return shlex.split(template.format(**_placeholders(self.topology, cluster, node)))
        except (KeyError, ValueError) as exc:
            raise ConfigurationError(f"drills.faults command for {fault} is not a valid template: {exc}") from exc

    def check(self, fault: FaultName, cluster: str, node: str | None) -> str:
        if fault == "planned-switchover":
            return "planned-switchover injects no fault: the switchover runbook is the action"
        argv = self._argv(self.settings.commands, fault, cluster, node)
        if argv is None:
            raise FaultInjectionFailed(
                f"fault {fault} cannot be injected: topology drills.faults.commands has no command for it"
            )
        return f"would run: {shlex.join(argv)} (timeout {self.settings.timeout_seconds:g} s)"

    def _execute(self, fault: FaultName, cluster: str, node: str | None, argv: list[str], verb: str) -> FaultInjection:
        started = time.monotonic()
        at = datetime.now(UTC)
        try:
            proc = self._run(argv, capture_output=True, timeout=self.settings.timeout_seconds, text=True)
        except subprocess.TimeoutExpired as exc:
            raise FaultInjectionFailed(
                f"{verb} {fault}: `{shlex.join(argv)}` did not finish within {self.settings.timeout_seconds:g} s"
            ) from exc
        except OSError as exc:
            raise FaultInjectionFailed(f"{verb} {fault}: `{shlex.join(argv)}` could not run: {exc}") from exc
        output = ((proc.stdout or "") + (proc.stderr or "")).strip()
        tail = " | ".join(output.splitlines()[-3:])
        if proc.returncode != 0:
            raise FaultInjectionFailed(f"{verb} {fault}: `{shlex.join(argv)}` exited {proc.returncode}: {tail}")
        region = self.topology.node(cluster, node).region if node else None
        return FaultInjection(
            fault=fault,
            cluster=cluster,
            node=node,
            region=region,
            at=at,
            changed=True,
            seconds=round(time.monotonic() - started, 2),
            detail=f"{verb} {fault} on {node or cluster}: `{shlex.join(argv)}` succeeded{f' ({tail})' if tail else ''}",
        )

    def inject(self, fault: FaultName, cluster: str, node: str | None) -> FaultInjection:
        if fault == "planned-switchover":
            return FaultInjection(
                fault=fault,
                cluster=cluster,
                node=node,
                region=None,
                at=datetime.now(UTC),
                changed=False,
                detail="planned-switchover: no fault injected",
            )
        self.check(fault, cluster, node)
        argv = self._argv(self.settings.commands, fault, cluster, node)
        assert argv is not None
        return self._execute(fault, cluster, node, argv, "injected")

    def resume(self, fault: FaultName, cluster: str, node: str | None) -> FaultInjection:
        argv = self._argv(self.settings.heal_commands, fault, cluster, node)
        if argv is None:
            return FaultInjection(
                fault=fault,
                cluster=cluster,
                node=node,
                region=None,
                at=datetime.now(UTC),
                changed=False,
                detail=f"no heal command for {fault}: the recovery runbooks repair it",
            )
        try:
            return self._execute(fault, cluster, node, argv, "healed")
        except FaultInjectionFailed as exc:
            raise ExternalSystemError(str(exc)) from exc
