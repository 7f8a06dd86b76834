"""Runbook names (kebab-case, as the CLI and docs use them) -> flow and parameter model."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from regionops.errors import ConfigurationError


@dataclass(frozen=True)
class Runbook:
    """Where a runbook's flow and its parameter model live (imported only when used)."""

    name: str
    module: str
    flow: str
    params: str
    summary: str

    def load(self) -> tuple[Any, type]:
        """The flow object and its parameter model class."""
        mod = importlib.import_module(self.module)
        return getattr(mod, self.flow), getattr(mod, self.params)


RUNBOOKS: dict[str, Runbook] = {
    rb.name: rb
    for rb in [
        Runbook(
            "region-health",
            "flows.region_health",
            "region_health",
            "RegionHealthParams",
            "probe every region: roles, lag, apps, buckets, writer record",
        ),
        Runbook(
            "switchover",
            "flows.switchover",
            "switchover",
            "SwitchoverParams",
            "planned primary move with zero data loss",
        ),
        Runbook(
            "failover",
            "flows.failover",
            "failover",
            "FailoverParams",
            "promote the best replica when the primary is down; fence, DNS, data-loss estimate",
        ),
        Runbook(
            "replica-resync",
            "flows.replica_resync",
            "replica_resync",
            "ResyncParams",
            "repair lagging, broken or diverged replicas: wait, repoint, pg_rewind or re-clone",
        ),
        Runbook(
            "backup",
            "flows.backup",
            "backup",
            "BackupParams",
            "pgBackRest full/diff/incr into every repository residency allows; proof record; retention; verify",
        ),
        Runbook(
            "restore-verify",
            "flows.restore_verify",
            "restore_verify",
            "RestoreVerifyParams",
            "restore a backup into a scratch instance, prove it, measure the restore time",
        ),
        Runbook(
            "restore",
            "flows.restore",
            "restore",
            "RestoreParams",
            "restore a backup onto a node: beside its data, verified, then swapped in",
        ),
        Runbook(
            "dr-drill",
            "flows.dr_drill",
            "dr_drill",
            "DrillParams",
            "inject a fault, recover, measure RTO/RPO from real writes, check consistency, roll back",
        ),
        Runbook(
            "release",
            "flows.release",
            "release",
            "ReleaseParams",
            "release an app version region by region: health gates, bake, approval, automatic rollback",
        ),
        Runbook(
            "region-traffic",
            "flows.region_traffic",
            "region_traffic",
            "RegionTrafficParams",
            "drain a region's app traffic (after checking the others can take it) or restore it",
        ),
    ]
}


def runbook(name: str) -> Runbook:
    """The runbook called ``name``, or an error listing the known ones."""
    if name not in RUNBOOKS:
        raise ConfigurationError(f"unknown runbook {name!r}; known: {', '.join(sorted(RUNBOOKS))}")
    return RUNBOOKS[name]
