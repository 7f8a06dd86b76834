"""The DR drill's parts: its parameters, its plan, the typed result of each step and the verdict.

:mod:`flows.dr_drill` orchestrates them in the order of runbooks/dr-drill.md; its
report and trend table are in :mod:`regionops.runbook.drill_report`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from regionops.decisions.drill import ConsistencyCheck, DrillMeasurement, ObjectiveVerdict
from regionops.errors import ConfigurationError
from regionops.health import HealthProblem
from regionops.model.faults import PRIMARY_FAULTS, FaultName
from regionops.rescue import rescue_cluster, switchover_window
from regionops.runbook.journal import RunJournal
from regionops.runbook.params import ClusterChangeParams, RunbookParams
from regionops.topology import Topology

# The alert each fault fires (the alert receiver maps it to the runbook that recovers it);
# a planned switchover fires none.
ALERT_FOR: dict[str, str] = {
    "primary-crash": "PostgresPrimaryDown",
    "region-outage": "PostgresPrimaryDown",
    "region-partition": "PostgresPrimaryDown",
    "primary-freeze": "PostgresPrimaryDown",
    "replica-loss": "PostgresReplicationBroken",
}
# What repairs a steady-state problem, for the refusal message.
REPAIR_HINT: dict[str, str] = {
    "node_unreachable": "replica-resync (or failover if it is the primary)",
    "replica_not_streaming": "replica-resync",
    "replica_lagging": "replica-resync",
    "replica_wrong_timeline": "replica-resync",
    "no_primary": "failover",
    "multiple_primaries": "failover after fencing one of them by hand",
    "writer_not_primary": "switchover or failover (the writer record must follow the primary)",
    "writer_record_missing": "switchover or failover",
    "app_down": "restart the app (`regionops lab heal` in the lab)",
    "app_degraded": "replica-resync for the app's local node",
    "bucket_unreachable": "fix the bucket",
    "bucket_wrong_region": "fix the bucket",
    "slot_retaining_wal": "replica-resync (or drop the slot of a node that is gone)",
    "slot_lost": "replica-resync (re-clone)",
    "slot_keep_unlimited": "set max_slot_wal_keep_size",
}


class DrillParams(RunbookParams):
    """Parameters of the DR drill (rendered as a form in the Prefect UI)."""

    cluster: str | None = Field(None, description="Cluster to drill; default the topology's only cluster")
    scenario: FaultName = Field(
        "primary-crash",
        description="primary-crash, region-outage, region-partition (a lab with --wan), primary-freeze, "
        "replica-loss or planned-switchover",
    )
    node: str | None = Field(
        None,
        description="replica-loss: the replica to lose (default the lowest-priority one); "
        "planned-switchover: the target (default the best replica)",
    )
    recovery_path: Literal["direct", "alert"] = Field(
        "direct",
        description="direct: call the recovery runbook as a subflow; alert: post an alert to the alert "
        "receiver and follow the run its automation starts",
    )
    confirmation_seconds: float = Field(
        10,
        ge=0,
        description="direct failover: the most the failover waits for evidence that the primary is down (its "
        "grace_seconds ceiling; a crash is called down as soon as the replicas have lost it)",
    )
    canary_interval_seconds: float = Field(0.05, gt=0, le=5, description="How often the canary writes")
    baseline_writes: int = Field(10, ge=1, description="Acknowledged canary writes needed before the fault")
    recovery_timeout_seconds: float = Field(180, gt=0, description="How long recovery may take before the drill fails")
    after_recovery_seconds: float = Field(1, ge=0, description="How long the canary keeps writing after recovery")
    rollback: bool = Field(True, description="Restore the original topology afterwards (resync, switchover back)")
    dry_run: bool = ClusterChangeParams.default(
        "dry_run", False, description="Check every precondition and print the plan; inject nothing"
    )
    notify: bool = ClusterChangeParams.default("notify", True)
    lock_wait_seconds: float = ClusterChangeParams.default("lock_wait_seconds", 0)

    @model_validator(mode="after")
    def _alert_path_fits(self) -> DrillParams:
        if self.recovery_path == "alert" and self.scenario == "planned-switchover":
            raise ValueError(
                "recovery_path alert does not apply to planned-switchover: no alert starts a "
                "planned switchover; use recovery_path direct"
            )
        return self


class Recovery(BaseModel):
    """Step 3's outcome: how the recovery runbook ended."""

    ok: bool = False
    sentence: str | None = None


class Measured(BaseModel):
    """Step 4's outcome: the figures, their verdicts, the replicas' catch-up and the consistency check."""

    new_primary: str | None = None
    measurement: DrillMeasurement | None = None
    verdicts: list[ObjectiveVerdict] = []
    catch_up: list[str] = []
    catch_up_seconds: float | None = None
    consistency: ConsistencyCheck | None = None


class Rollback(BaseModel):
    """Step 5's outcome: what the rollback did, and whether the steady state holds again."""

    notes: list[str] = []
    ok: bool = True
    steady_after: bool | None = None
    final_consistency: ConsistencyCheck | None = None


class DrillResult(BaseModel):
    """What the drill did and measured."""

    cluster: str
    scenario: FaultName
    recovery_path: str
    dry_run: bool
    ok: bool  # recovered, objectives met, consistent, rolled back, steady again
    canary_run_id: str
    original_primary: str
    target: str | None
    new_primary: str | None = None
    plan: list[str]
    injection: str | None = None
    recovery: str | None = None
    recovery_ok: bool = False
    measurement: DrillMeasurement | None = None
    verdicts: list[ObjectiveVerdict] = []
    catch_up: list[str] = []
    catch_up_seconds: float | None = None
    consistency: ConsistencyCheck | None = None
    rollback: list[str] = []
    rollback_ok: bool | None = None
    final_consistency: ConsistencyCheck | None = None
    steady_after: bool | None = None
    acknowledged: list[int] = []  # canary sequence numbers the app side saw acknowledged

    def sentence(self) -> str:
        """One line for logs and reports."""
        if self.dry_run:
            return (
                f"dry run: {self.scenario} drill of {self.cluster} planned in {len(self.plan)} steps; nothing injected"
            )
        figures = self.measurement.sentence() if self.measurement else "nothing measured"
        verdict = "PASSED" if self.ok else "FAILED"
        return f"{self.scenario} drill of {self.cluster} {verdict}: {figures}"

    @classmethod
    def planned(
        cls, params: DrillParams, cluster: str, original: str, target: str | None, plan: list[str], run_name: str
    ) -> DrillResult:
        """The result of a drill that has not started yet (its canary's run id is unique per drill)."""
        return cls(
            cluster=cluster,
            scenario=params.scenario,
            recovery_path=params.recovery_path,
            dry_run=params.dry_run,
            ok=False,
            canary_run_id=f"{run_name}-{uuid.uuid4().hex[:8]}",
            original_primary=original,
            target=target,
            plan=plan,
        )

    def with_outcomes(self, recovery: Recovery, measured: Measured, rolled_back: Rollback | None) -> DrillResult:
        """The result with each step's outcome, and the verdict: recovered, objectives met, consistent,
        and (when the drill rolls back) rolled back, steady and consistent again."""
        update = {
            "recovery": recovery.sentence,
            "recovery_ok": recovery.ok,
            **measured.model_dump(exclude={"measurement", "verdicts", "consistency"}),
            "measurement": measured.measurement,
            "verdicts": measured.verdicts,
            "consistency": measured.consistency,
        }
        if rolled_back is not None:
            update |= {
                "rollback": rolled_back.notes,
                "rollback_ok": rolled_back.ok,
                "steady_after": rolled_back.steady_after,
                "final_consistency": rolled_back.final_consistency,
            }
        back = rolled_back is None or bool(
            rolled_back.ok
            and rolled_back.steady_after
            and rolled_back.final_consistency
            and rolled_back.final_consistency.ok
        )
        ok = bool(
            recovery.ok
            and measured.measurement
            and all(v.passed for v in measured.verdicts)
            and measured.consistency
            and measured.consistency.ok
            and back
        )
        return self.model_copy(update={**update, "ok": ok})


def drill_plan(params: DrillParams, runbook: str, target: str | None, original: str, writer_record: str) -> list[str]:
    """The drill's steps in order, as the report and a dry run show them (``runbook``: the recovery runbook)."""
    how = (
        "as a subflow"
        if params.recovery_path == "direct"
        else f"by posting {ALERT_FOR.get(params.scenario)} to the alert receiver and following the run it starts"
    )
    plan = [
        f"start the canary: a numbered row every {params.canary_interval_seconds * 1000:.0f} ms through "
        f"{writer_record}; wait for {params.baseline_writes} acknowledged writes",
        f"inject {params.scenario}" + (f" into {target}" if target and params.scenario != "planned-switchover" else ""),
    ]
    plan.append(
        f"recover: {runbook} {how}"
        + (f" (target {target})" if params.scenario == "planned-switchover" and target else "")
    )
    plan += [
        "measure RTO, RPO and the write outage from the canary; wait for every replica to catch up; "
        "compare row counts and checksums of the canary and application tables on every replica"
    ]
    if params.rollback:
        plan += [
            "rollback: resume what the fault stopped; replica-resync every node; switchover back to "
            f"{original} if the primary moved; region health and a consistency check over every node"
        ]
    plan += ["report: timeline, figures against the objectives, trend row; Slack summary"]
    return plan


def choose_target(topology: Topology, cluster: str, params: DrillParams, primary: str) -> str | None:
    """The node the fault hits: the primary for a primary fault, else the named (or lowest-priority) replica."""
    nodes = topology.clusters[cluster].nodes
    if params.node is not None and params.node not in nodes:
        raise ConfigurationError(f"cluster {cluster} has no node {params.node!r}; it has: {', '.join(sorted(nodes))}")
    if params.scenario in PRIMARY_FAULTS:
        return primary
    if params.node == primary:
        raise ConfigurationError(f"{params.scenario} needs a replica, but {primary} is the primary")
    if params.scenario == "replica-loss" and params.node is None:
        replicas = [n for n in nodes if n != primary]
        return min(replicas, key=lambda n: (nodes[n].priority, n))
    return params.node


def not_steady(problems: list[HealthProblem]) -> str:
    """Why the drill does not start, naming the repair of each steady-state problem."""
    return "the drill did not start: the steady state does not hold: " + "; ".join(
        f"{p.message} (repair: {REPAIR_HINT.get(p.kind, 'see region health')})" for p in problems
    )


def rescue_from_journal(topology: Topology, cluster: str, record: dict[str, Any]) -> list[str]:
    """A cancelled drill's undo: one writable primary, from what its journal says it disturbed.

    The drill's switchover subflows (planned-switchover, the switch back) were killed with
    it: where one was, its own journal says, if written since the drill took the lock.
    """
    since = datetime.fromisoformat(record["locked_at"]) if record.get("locked_at") else None
    switchover_journal = RunJournal(topology, "switchover", cluster)
    window = switchover_window(switchover_journal.read_written_since(since))
    lines = rescue_cluster(topology, cluster, record.get("scenario"), record.get("target"), since, window)
    switchover_journal.clear()
    return lines
