"""Runbook: disaster-recovery drill, proof that recovery works and how fast, from the app's own writes.

Steady state -> action -> measurement -> rollback -> steady state:

1. Lock and steady state: the drill takes the cluster's change lock (refused, or waiting
   ``lock_wait_seconds``, while another runbook changes the cluster: a drill must never
   inject a fault that no runbook may then repair); region health passes and no node is
   fenced; else the drill does not start and names what to repair (and which runbook
   repairs it).  The fault must be injectable (node reachable, command configured).
   The recovery runbooks, subflows, share the drill's lock; on the alert path the drill
   lets the failover its alert starts take the lock, and takes it back afterwards.
2. (Dry run: print the plan and stop.)
3. Action: start the canary writer (a numbered heartbeat row every 50 ms through the
   writer record), wait for its baseline, inject the fault, and start the recovery the
   way production does: ``direct`` calls the runbook as a subflow; ``alert`` posts an
   Alertmanager payload to the alert receiver and follows the run its automation starts.
   Faults and their recovery: primary-crash, region-outage, primary-freeze -> failover;
   replica-loss -> replica-resync (re-clone); planned-switchover -> switchover.
4. Measurement: RTO (fault -> first acknowledged write sent after it; for a planned
   switchover, its write outage), RPO (acknowledged writes missing on the new primary,
   rows and seconds), the write outage, the time for every replica to catch up, and a
   consistency check (row counts and checksums of the canary and application tables on
   every replica against the new primary, all read at one common point, so an
   application writing throughout never produces a mismatch).
5. Rollback, also when the action failed: resume what the fault stopped, replica-resync
   brings the old primary back, a switchover returns the original primary, and the
   steady state is checked again (with a consistency check over every node).
6. Report: a markdown artifact (timeline, each figure against the cluster's objectives,
   pass/fail), a trend table under a stable key that grows one row per drill, and a
   summary in the run's Slack thread.

Cancelling the run mid-way runs :func:`rescue_cancelled_drill`: exactly one writable
primary is left, named by the writer record, and what remains is left to replica-resync.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import Artifact, create_table_artifact
from prefect.runtime import flow_run as current_run
from pydantic import BaseModel, Field, model_validator

from flows.failover import FailoverParams, failover
from flows.region_health import RegionHealthParams, region_health
from flows.replica_resync import ResyncParams, replica_resync
from flows.switchover import SwitchoverParams, switchover
from regionops.decisions import find_primary
from regionops.decisions.drill import (
    ConsistencyCheck,
    DrillMeasurement,
    ObjectiveVerdict,
    compare_fingerprints,
    judge,
    measure,
)
from regionops.drill_rescue import rescue_cluster
from regionops.drivers.alerts import alertmanager_payload
from regionops.drivers.canary import CANARY_TABLE, CanaryWriter
from regionops.drivers.notify import notifier_for
from regionops.errors import ConfigurationError, PreconditionFailed, RunbookError
from regionops.health import RegionHealthReport
from regionops.model.faults import PRIMARY_FAULTS, FaultInjection, FaultName
from regionops.runbook.common import Progress, observe_cluster, refuse, report_error
from regionops.runbook.locks import HeldLock, LockLost, cluster_lock, drill_lock, release_run_leases
from regionops.runbook.monitoring import PlannedWorkSilence
from regionops.runbook.params import RunbookParams
from regionops.runbook.reporting import RunReporter, artifact_key, report_failure
from regionops.runbook.triggered_runs import wait_for_run_end, wait_for_started_run
from regionops.topology import Topology, load_topology
from tasks.drill import (
    check_fault,
    current_lsn,
    fingerprint_at_common_point,
    inject_fault,
    post_alert,
    resume_fault,
    rows_on,
    wait_first_ack_after,
    wait_for_acks,
)
from tasks.replication import fenced_nodes, wait_replayed, writer_node

RECOVERY_RUNBOOK: dict[str, str] = {
    "primary-crash": "failover",
    "region-outage": "failover",
    "primary-freeze": "failover",
    "replica-loss": "replica-resync",
    "planned-switchover": "switchover",
}
ALERT_FOR: dict[str, str] = {
    "primary-crash": "PostgresPrimaryDown",
    "region-outage": "PostgresPrimaryDown",
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
TREND_ROWS = 200


class DrillParams(RunbookParams):
    """Parameters of the DR drill (rendered as a form in the Prefect UI)."""

    cluster: str | None = Field(None, description="Cluster to drill; default the topology's only cluster")
    scenario: FaultName = Field(
        "primary-crash", description="primary-crash, region-outage, primary-freeze, replica-loss or planned-switchover"
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
        10, ge=0, description="direct failover: how long the primary must stay unreachable before it is called down"
    )
    canary_interval_seconds: float = Field(0.05, gt=0, le=5, description="How often the canary writes")
    baseline_writes: int = Field(10, ge=1, description="Acknowledged canary writes needed before the fault")
    recovery_timeout_seconds: float = Field(180, gt=0, description="How long recovery may take before the drill fails")
    after_recovery_seconds: float = Field(1, ge=0, description="How long the canary keeps writing after recovery")
    rollback: bool = Field(True, description="Restore the original topology afterwards (resync, switchover back)")
    dry_run: bool = Field(False, description="Check every precondition and print the plan; inject nothing")
    notify: bool = Field(True, description="Report the drill in a Slack thread")
    lock_wait_seconds: float = Field(
        0,
        ge=0,
        description="How long to wait for another runbook to release the cluster before refusing "
        "(the drill takes the cluster's change lock before it injects anything)",
    )

    @model_validator(mode="after")
    def _alert_path_fits(self) -> DrillParams:
        if self.recovery_path == "alert" and self.scenario == "planned-switchover":
            raise ValueError(
                "recovery_path alert does not apply to planned-switchover: no alert starts a "
                "planned switchover; use recovery_path direct"
            )
        return self


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
        if self.dry_run:
            return (
                f"dry run: {self.scenario} drill of {self.cluster} planned in {len(self.plan)} steps; nothing injected"
            )
        figures = self.measurement.sentence() if self.measurement else "nothing measured"
        verdict = "PASSED" if self.ok else "FAILED"
        return f"{self.scenario} drill of {self.cluster} {verdict}: {figures}"


def drill_plan(params: DrillParams, target: str | None, original: str, writer_record: str) -> list[str]:
    """The drill's steps in order, as the report and a dry run show them."""
    runbook = RECOVERY_RUNBOOK[params.scenario]
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


@flow(name="dr-drill", on_failure=[report_failure], on_crashed=[report_failure])
def dr_drill(params: DrillParams = DrillParams()) -> DrillResult:
    """Inject a fault, recover the way production does, measure RTO and RPO from real writes, roll back."""
    topology = load_topology(params.topology)
    cluster_name, _ = topology.cluster(params.cluster)
    reporter = RunReporter(topology, "dr-drill", f"DR drill {params.scenario} on {cluster_name}", slack=params.notify)
    reporter.start(
        [
            f"scenario {params.scenario}, recovery {params.recovery_path}",
            "dry run: nothing will be injected" if params.dry_run else "this drill disturbs the cluster",
        ]
    )
    progress = Progress()
    try:
        if params.dry_run:  # a dry run changes nothing: it needs no lock
            return _checked_drill(topology, cluster_name, params, reporter, progress, None)
        # The drill changes the cluster like any runbook: it takes the cluster's change lock
        # before it looks, and refuses (or waits, lock_wait_seconds) while another runbook
        # changes the cluster; its recovery runbooks, subflows, share that lock.
        with ExitStack() as locks:
            locks.enter_context(drill_lock(cluster_name))
            held = locks.enter_context(
                cluster_lock(
                    cluster_name, "dr-drill", params.lock_wait_seconds, on_wait=lambda line: reporter.step(line)
                )
            )
            return _checked_drill(topology, cluster_name, params, reporter, progress, held, locks)
    except Exception as exc:
        report_error(reporter, exc, changed=progress.changed)
        raise


def _checked_drill(
    topology: Topology,
    cluster_name: str,
    params: DrillParams,
    reporter: RunReporter,
    progress: Progress,
    held: HeldLock | None,
    locks: ExitStack | None = None,
) -> DrillResult:
    """1. The steady state must hold and nothing be fenced; else the drill changes nothing and names the repair."""
    steady = _steady_state(topology, cluster_name, params, reporter, "before the drill")
    if not steady.healthy:
        raise refuse(
            reporter,
            "the drill did not start: the steady state does not hold: "
            + "; ".join(
                f"{p.message} (repair: {REPAIR_HINT.get(p.kind, 'see region health')})" for p in steady.problems
            ),
        )
    fenced = fenced_nodes(topology, cluster_name)
    if fenced:
        raise refuse(
            reporter,
            "the drill did not start: "
            + "; ".join(
                f"{node} is fenced ({m.sentence()}); run replica-resync to bring it back" for node, m in fenced.items()
            ),
        )
    # A direct drill silences the alerts its fault causes (Alertmanager, when the topology
    # has one): they would page and start a second, alert-driven failover.  The alert
    # path must not be silenced: proving it is the point.
    quiet = PlannedWorkSilence(topology, cluster_name, "dr-drill", reporter, params.recovery_timeout_seconds + 900)
    if locks is None:
        return _drill(topology, cluster_name, params, reporter, progress, steady, quiet, DrillLock(None, None))
    locks.enter_context(quiet)
    return _drill(topology, cluster_name, params, reporter, progress, steady, quiet, DrillLock(held, locks))


class DrillLock:
    """The drill's hold on the cluster's change lock, which its alert path hands to the failover and takes back."""

    def __init__(self, held: HeldLock | None, locks: ExitStack | None):
        self.held = held
        self.locks = locks

    def before_fault(self) -> None:
        """The first change: refused here (nothing injected) if the lock was lost meanwhile."""
        if self.held is not None:
            self.held.mark_changed()

    def hand_to_failover(self) -> None:
        """The failover the drill's alert starts may take the lock over (the drill waits for it meanwhile)."""
        if self.held is not None:
            self.held.yield_to("failover")

    def take_back(self, cluster: str, wait_seconds: float, reporter: RunReporter) -> None:
        """After the alert's run ended: hold the lock again for measurement and rollback."""
        if self.held is None or self.locks is None:
            return
        try:
            self.held.confirm()
            return  # nobody took it over
        except LockLost:
            pass
        self.held = self.locks.enter_context(
            cluster_lock(cluster, "dr-drill", wait_seconds, on_wait=lambda line: reporter.step(line))
        )
        self.held.mark_changed()
        reporter.step(f"took the cluster lock back for the measurement and the rollback ({self.held.name})")


def _steady_state(
    topology: Topology, cluster: str, params: DrillParams, reporter: RunReporter, when: str
) -> RegionHealthReport:
    """Region health as a subflow (its own run and report), without its Slack alert."""
    report = region_health(RegionHealthParams(topology=params.topology, cluster=cluster, notify=False))
    reporter.step(f"steady state {when}: {report.sentence()}")
    return report


def _choose_target(topology: Topology, cluster: str, params: DrillParams, primary: str) -> str | None:
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


def _drill(
    topology: Topology,
    cluster: str,
    params: DrillParams,
    reporter: RunReporter,
    progress: Progress,
    steady: RegionHealthReport,
    quiet: PlannedWorkSilence,
    lock: DrillLock,
) -> DrillResult:
    original = steady.primary
    assert original is not None  # a healthy steady state has one primary
    target = _choose_target(topology, cluster, params, original)
    reporter.step(f"the fault can be injected: {check_fault(topology, params.scenario, cluster, target)}")
    if params.recovery_path == "alert" and topology.alerting is None:
        raise refuse(reporter, "recovery_path alert needs the topology's alerting section (the alert receiver)")
    canary_id = f"{current_run.get_name() or 'drill'}-{uuid.uuid4().hex[:8]}"
    plan = drill_plan(params, target, original, topology.writer_record(cluster))
    result = DrillResult(
        cluster=cluster,
        scenario=params.scenario,
        recovery_path=params.recovery_path,
        dry_run=params.dry_run,
        ok=False,
        canary_run_id=canary_id,
        original_primary=original,
        target=target,
        plan=plan,
    )
    if params.dry_run:
        result.ok = True
        reporter.finish(
            "dry run",
            [result.sentence(), "nothing was injected or changed"],
            tables={"plan": [{"step": i, "action": a} for i, a in enumerate(plan, 1)]},
        )
        return result

    # 3. Action.
    canary = CanaryWriter(topology, cluster, canary_id, interval=params.canary_interval_seconds)
    canary.ensure_table()
    canary.start()
    injection: FaultInjection | None = None
    action_error: BaseException | None = None
    try:
        acked = wait_for_acks(canary, params.baseline_writes, timeout=30)
        reporter.step(f"canary {canary_id} writing: {acked} writes acknowledged before the fault")
        _remember(
            topology,
            cluster,
            {
                "run": str(current_run.get_id() or ""),
                "scenario": params.scenario,
                "target": target,
                "original_primary": original,
                "locked_at": lock.held.holder.since.isoformat() if lock.held else None,
            },
        )
        lock.before_fault()
        if params.recovery_path == "direct":
            quiet.begin()
        progress.changed = True
        injection = inject_fault(topology, params.scenario, cluster, target)
        reporter.step(injection.sentence())
        _recover(topology, cluster, params, target, injection, reporter, result, lock)
    except Exception as exc:  # noqa: BLE001 - the rollback below runs whatever happened
        action_error = exc
        reporter.step(f"the action failed: {type(exc).__name__}: {exc}")
    finally:
        if injection is not None:
            _measure(topology, cluster, params, canary, injection, reporter, result)
        journal = canary.stop()
        result.acknowledged = [w.seq for w in journal if w.acked]

    # 5. Rollback, whatever happened above.
    if params.rollback and injection is not None:
        _rollback(topology, cluster, params, original, target, reporter, result)
    _forget(topology, cluster)

    # 6. Verdict and report.
    if action_error is not None and injection is None:
        if isinstance(action_error, PreconditionFailed):
            progress.changed = False  # the fault was never injected: only canary rows were written
        raise action_error
    result.ok = bool(
        result.recovery_ok
        and result.measurement
        and all(v.passed for v in result.verdicts)
        and result.consistency
        and result.consistency.ok
        and (
            not params.rollback
            or (result.rollback_ok and result.steady_after and result.final_consistency and result.final_consistency.ok)
        )
    )
    _report(topology, cluster, params, reporter, result, injection)
    if action_error is not None:
        raise action_error
    return result


def _recover(
    topology: Topology,
    cluster: str,
    params: DrillParams,
    target: str | None,
    injection: FaultInjection,
    reporter: RunReporter,
    result: DrillResult,
    lock: DrillLock,
) -> None:
    """Start the recovery runbook the way production would and wait for its outcome."""
    runbook = RECOVERY_RUNBOOK[params.scenario]
    reason = f"DR drill {current_run.get_name() or ''} ({params.scenario})".strip()
    if params.recovery_path == "alert":
        # The alert's run is not ours: it may take the cluster lock over; we take it back after.
        lock.hand_to_failover()
        labels = {
            "cluster": cluster,
            "node": target or "",
            "region": topology.node(cluster, target).region if target else "",
            "severity": "critical",
            "source": "dr-drill",
        }
        payload = alertmanager_payload(
            ALERT_FOR[params.scenario], labels, injection.at, f"DR drill: {params.scenario} injected into {target}"
        )
        reporter.step(post_alert(topology, payload).sentence())
        run = wait_for_started_run(runbook, cluster, injection.at, timeout=60, topology=params.topology)
        reporter.step(f"the alert's automation started {runbook} run {run.name}")
        run = wait_for_run_end(run.id, timeout=params.recovery_timeout_seconds)
        result.recovery = f"{runbook} run {run.name} ended {run.state.name if run.state else '?'}"
        result.recovery_ok = bool(run.state and run.state.is_completed())
        lock.take_back(cluster, 60, reporter)
    else:
        if runbook == "failover":
            state = failover(
                FailoverParams(
                    topology=params.topology,
                    cluster=cluster,
                    node=target,
                    reason=reason,
                    grace_seconds=params.confirmation_seconds,
                    probes=3,
                    probe_timeout_seconds=1,
                    lock_wait_seconds=30,
                    notify=params.notify,
                ),
                return_state=True,
            )
        elif runbook == "replica-resync":
            state = replica_resync(
                ResyncParams(
                    topology=params.topology,
                    cluster=cluster,
                    node=target,
                    verify_timeout_seconds=params.recovery_timeout_seconds,
                    lock_wait_seconds=30,
                    notify=params.notify,
                ),
                return_state=True,
            )
        else:
            state = switchover(
                SwitchoverParams(
                    topology=params.topology, cluster=cluster, target=target, lock_wait_seconds=30, notify=params.notify
                ),
                return_state=True,
            )
        result.recovery_ok = state.is_completed()
        try:
            outcome = state.result()
            result.recovery = outcome.sentence()
        except Exception as exc:  # noqa: BLE001 - the runbook's own error is the drill's finding
            result.recovery = f"{runbook} {state.name.lower()}: {type(exc).__name__}: {exc}"
    reporter.step(f"recovery: {result.recovery}")
    if params.scenario == "primary-freeze":
        reporter.step(resume_fault(topology, params.scenario, cluster, target).sentence())


def _measure(
    topology: Topology,
    cluster: str,
    params: DrillParams,
    canary: CanaryWriter,
    injection: FaultInjection,
    reporter: RunReporter,
    result: DrillResult,
) -> None:
    """RTO, RPO, catch-up and consistency, from the canary and the nodes themselves."""
    try:
        first = wait_first_ack_after(canary, injection.at, timeout=30 if result.recovery_ok else 5)
        if first is not None:
            time.sleep(params.after_recovery_seconds)  # the canary keeps writing a little past recovery
        journal = canary.stop()
        states = observe_cluster(topology, cluster)
        view = find_primary(topology, cluster, states, writer_node(topology, cluster))
        result.new_primary = view.primary if view.reachable else None
        if result.new_primary is None:
            reporter.step(f"no reachable primary after recovery ({view.reason}): RPO cannot be measured")
            return
        present = rows_on(topology, cluster, result.new_primary, result.canary_run_id)
        result.measurement = measure(journal, injection.at, present, planned=params.scenario == "planned-switchover")
        result.verdicts = judge(result.measurement, topology.clusters[cluster].objectives)
        reporter.step(result.measurement.sentence())
        for verdict in result.verdicts:
            reporter.step(verdict.sentence())
        # Catch-up: every streaming replica replays the new primary's position after the last write.
        c = topology.clusters[cluster]
        position = current_lsn(topology, cluster, result.new_primary)
        replicas = [n for n, s in states.items() if n != result.new_primary and s.reachable and s.role == "replica"]
        waits = [wait_replayed(topology, cluster, n, position, 60) for n in replicas]
        result.catch_up = [w.sentence() for w in waits]
        result.catch_up_seconds = max((w.seconds for w in waits), default=0.0)
        for line in result.catch_up:
            reporter.step(line, slack=False)
        caught = [w.node for w in waits if w.reached]
        skipped = {n: states[n].sentence() for n in c.nodes if n != result.new_primary and n not in caught}
        result.consistency = _consistency(topology, cluster, result.new_primary, caught, skipped)
        reporter.step(result.consistency.sentence())
    except Exception as exc:  # noqa: BLE001 - a failed measurement must never skip the rollback
        reporter.step(f"measurement incomplete: {type(exc).__name__}: {exc}")


def _consistency(
    topology: Topology, cluster: str, primary: str, replicas: list[str], skipped: dict[str, str] | None = None
) -> ConsistencyCheck:
    c = topology.clusters[cluster]
    tables = sorted({f"public.{CANARY_TABLE}", *c.backup.fingerprint_tables})
    # Every node is read at one common point: the application keeps writing throughout.
    point, prints = fingerprint_at_common_point(topology, cluster, primary, replicas, tables)
    return compare_fingerprints(primary, prints, not_compared=skipped, point=point)


def _rollback(
    topology: Topology,
    cluster: str,
    params: DrillParams,
    original: str,
    target: str | None,
    reporter: RunReporter,
    result: DrillResult,
) -> None:
    """Put the original topology back: resume, resync every node, switchover back, steady state again."""
    notes: list[str] = []
    ok = True

    def note(line: str) -> None:
        notes.append(line)
        reporter.step(f"rollback: {line}")

    try:
        if params.scenario in ("region-outage", "primary-freeze"):
            note(resume_fault(topology, params.scenario, cluster, target).sentence())
        resync = replica_resync(
            ResyncParams(
                topology=params.topology,
                cluster=cluster,
                verify_timeout_seconds=120,
                lock_wait_seconds=60,
                notify=False,
            ),
            return_state=True,
        )
        ok &= resync.is_completed()
        note(_outcome("replica-resync", resync))
        if params.scenario == "replica-loss":
            note(resume_fault(topology, params.scenario, cluster, target).sentence())
        states = observe_cluster(topology, cluster)
        view = find_primary(topology, cluster, states, writer_node(topology, cluster))
        if view.primary != original:
            back = switchover(
                SwitchoverParams(
                    topology=params.topology, cluster=cluster, target=original, lock_wait_seconds=60, notify=False
                ),
                return_state=True,
            )
            ok &= back.is_completed()
            note(_outcome(f"switchover back to {original}", back))
        steady = _steady_state(topology, cluster, params, reporter, "after the rollback")
        result.steady_after = steady.healthy
        if steady.primary:
            others = [n for n in topology.clusters[cluster].nodes if n != steady.primary]
            position = current_lsn(topology, cluster, steady.primary)
            for node in others:
                wait_replayed(topology, cluster, node, position, 60)
            result.final_consistency = _consistency(topology, cluster, steady.primary, others)
            note(f"final check: {result.final_consistency.sentence()}")
    except Exception as exc:  # noqa: BLE001 - a failed rollback is reported, loudly
        ok = False
        note(f"FAILED: {type(exc).__name__}: {exc}; run region-health and replica-resync by hand")
    result.rollback, result.rollback_ok = notes, ok


def _outcome(what: str, state: Any) -> str:
    try:
        return f"{what}: {state.result().sentence()}"
    except Exception as exc:  # noqa: BLE001 - reported as the step's outcome
        return f"{what} {state.name.lower()}: {type(exc).__name__}: {exc}"


# -- report ---------------------------------------------------------------------------------------
def _report(
    topology: Topology,
    cluster: str,
    params: DrillParams,
    reporter: RunReporter,
    result: DrillResult,
    injection: FaultInjection | None,
) -> None:
    t0 = injection.at if injection else reporter.started_at
    timeline = [
        {"t (s)": f"{(at - t0).total_seconds():+.2f}", "at (UTC)": f"{at:%H:%M:%S.%f}"[:-3], "step": s}
        for at, s in reporter.steps
    ]
    objectives = [
        {
            "figure": v.name,
            "measured (s)": "not reached" if v.measured is None else f"{v.measured:.2f}",
            "objective (s)": f"{v.objective:g}",
            "result": "pass" if v.passed else "FAIL",
        }
        for v in result.verdicts
    ]
    m = result.measurement
    figures = (
        []
        if m is None
        else [
            {
                "figure": "RTO (write outage)"
                if params.scenario == "planned-switchover"
                else "RTO (fault -> first acknowledged write)",
                "value": f"{m.rto_seconds} s",
            },
            {
                "figure": "RPO (acknowledged writes lost)",
                "value": f"{m.rpo_rows} rows, {m.rpo_seconds:.2f} s of writes",
            },
            {
                "figure": "write outage (longest gap between acknowledgements)",
                "value": f"{m.unavailable_seconds:.2f} s",
            },
            {"figure": "replicas caught up within", "value": f"{result.catch_up_seconds} s"},
            {"figure": "canary writes acknowledged", "value": f"{m.writes_acknowledged} of {m.writes_sent}"},
            {"figure": "late acknowledgements (committed after the client gave up)", "value": str(len(m.late_acks))},
        ]
    )
    summary = [
        result.sentence(),
        f"recovery: {result.recovery or 'not started'}",
        result.consistency.sentence() if result.consistency else "consistency not checked",
        f"rollback: {'ok' if result.rollback_ok else 'FAILED' if result.rollback_ok is False else 'not run'}"
        + (
            f"; steady state {'holds' if result.steady_after else 'does NOT hold'} again"
            if result.steady_after is not None
            else ""
        ),
    ]
    trend = _append_trend(cluster, params, result)
    reporter.finish(
        "passed" if result.ok else "failed",
        summary,
        tables={
            "objectives": objectives,
            "figures": figures,
            "timeline": timeline,
            "rollback": [{"step": i, "outcome": s} for i, s in enumerate(result.rollback, 1)],
            "trend (last 10 drills)": trend[-10:],
        },
    )


def trend_key(cluster: str) -> str:
    """The stable artifact key of a cluster's drill trend table."""
    return artifact_key(f"dr-drill-trend-{cluster}")


def _append_trend(cluster: str, params: DrillParams, result: DrillResult) -> list[dict[str, Any]]:
    """Add this drill's row to the trend table artifact (one row per drill, across runs)."""
    log = get_run_logger()
    rows: list[dict[str, Any]] = []
    try:
        previous = Artifact.get(trend_key(cluster))
        if previous is not None and previous.data:
            data = previous.data if isinstance(previous.data, list) else json.loads(previous.data)
            rows = [r for r in data if isinstance(r, dict)]
    except Exception as exc:  # noqa: BLE001 - a missing trend starts a new one
        log.warning("could not read the drill trend: %s", exc)
    m = result.measurement
    rows.append(
        {
            "date (UTC)": f"{datetime.now(UTC):%Y-%m-%d %H:%M}",
            "run": current_run.get_name() or "",
            "scenario": params.scenario,
            "path": params.recovery_path,
            "RTO s": m.rto_seconds if m else None,
            "RPO rows": m.rpo_rows if m else None,
            "RPO s": m.rpo_seconds if m else None,
            "outage s": m.unavailable_seconds if m else None,
            "consistent": bool(result.consistency and result.consistency.ok),
            "result": "pass" if result.ok else "FAIL",
        }
    )
    rows = rows[-TREND_ROWS:]
    try:
        create_table_artifact(
            key=trend_key(cluster), table=rows, description=f"DR drills of {cluster}: one row per drill, newest last"
        )
    except Exception as exc:  # noqa: BLE001 - the report must not fail on the trend
        log.warning("could not write the drill trend: %s", exc)
    return rows


# -- cancellation ---------------------------------------------------------------------------------
def _journal_path(topology: Topology, cluster: str) -> Path | None:
    if not topology.state_dir:
        return None
    return Path(topology.state_dir) / "drills" / f"{cluster}.json"


def _remember(topology: Topology, cluster: str, doc: dict[str, Any]) -> None:
    """Record what this drill is about to disturb, for the cancellation hook."""
    path = _journal_path(topology, cluster)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc))


def _forget(topology: Topology, cluster: str) -> None:
    path = _journal_path(topology, cluster)
    if path is not None:
        path.unlink(missing_ok=True)


def rescue_cancelled_drill(flow: Any, flow_run: Any, state: Any) -> None:
    """on_cancellation hook: leave exactly one writable primary, named by the writer record.

    Runs in the runner's process after the drill's process was killed.  Releases the
    locks the drill's runs held, then applies :func:`regionops.drill_rescue.rescue_cluster`.
    """
    params = (flow_run.parameters or {}).get("params") or {}
    try:
        topology = load_topology(params.get("topology"))
        cluster, _ = topology.cluster(params.get("cluster"))
    except RunbookError:
        return
    released = release_run_leases(str(flow_run.id))
    path = _journal_path(topology, cluster)
    doc = json.loads(path.read_text()) if path is not None and path.exists() else {}
    if doc.get("run") not in (None, "", str(flow_run.id)):
        doc = {}
    lines = [f"released {released} lock(s) the cancelled drill held"]
    since = datetime.fromisoformat(doc["locked_at"]) if doc.get("locked_at") else None
    lines += rescue_cluster(topology, cluster, doc.get("scenario"), doc.get("target"), since)
    _forget(topology, cluster)
    url = f"{topology.prefect.ui_url.rstrip('/')}/runs/flow-run/{flow_run.id}" if topology.prefect.ui_url else None
    notifier_for(topology).alert(f"DR drill cancelled: {cluster} made safe", lines, url)


dr_drill = dr_drill.with_options(on_cancellation=[rescue_cancelled_drill])
