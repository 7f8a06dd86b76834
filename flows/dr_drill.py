"""Runbook: disaster-recovery drill, proof that recovery works and how fast, from the app's own writes.

Orchestration only, numbered like runbooks/dr-drill.md (which says what each step
proves): 1. lock and steady state, 2. dry run, 3. action, 4. measurement, 5. rollback,
6. report.  Its parts (parameters, plan, typed step results, verdict) are in
:mod:`regionops.runbook.drill`, its report and trend in :mod:`regionops.runbook.drill_report`.
A cancelled drill's hook leaves exactly one writable primary, from the run's journal
(:func:`regionops.runbook.drill.rescue_from_journal`).
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run as current_run

from flows.failover import FailoverParams, failover
from flows.replica_resync import ResyncParams, replica_resync
from flows.switchover import SwitchoverParams, switchover
from regionops.alerting.intents import intent_for
from regionops.decisions.drill import judge, measure
from regionops.drivers.alerts import alertmanager_payload
from regionops.drivers.canary import CanaryWriter
from regionops.errors import PreconditionFailed
from regionops.ha.fencing import FenceMarker
from regionops.health import RegionHealthReport
from regionops.model.faults import FaultInjection
from regionops.runbook.common import subflow_outcome
from regionops.runbook.context import REPORT_HOOKS, FlowHooks, RunbookRun
from regionops.runbook.drill import (
    ALERT_FOR,
    DrillParams,
    DrillResult,
    Measured,
    Recovery,
    Rollback,
    choose_target,
    drill_plan,
    not_steady,
    rescue_from_journal,
)
from regionops.runbook.drill_report import report_drill, trend_key
from regionops.runbook.journal import undo_on_cancel
from regionops.runbook.triggered_runs import wait_for_run_end, wait_for_started_run
from regionops.topology import Topology, load_topology
from tasks.drill import (
    canary_after_fault,
    catch_up,
    check_fault,
    consistency_at_common_point,
    inject_fault,
    post_alert,
    primary_and_rows,
    resume_fault,
    start_canary_baseline,
    steady_state,
)
from tasks.runbook_monitoring import PlannedWorkSilence

__all__ = ["DrillParams", "DrillResult", "dr_drill", "recovery_runbook", "trend_key"]


def recovery_runbook(scenario: str) -> str:
    """The runbook that recovers a fault: the one its alert starts (a planned switchover fires none)."""
    intent = intent_for(ALERT_FOR.get(scenario))
    return intent.runbook if intent else "switchover"


# A crashed drill's leases expire; a cancelled one's are freed by its cancel hook, which also
# leaves one writable primary, from the run's journal.
DRILL_HOOKS: FlowHooks = {
    **REPORT_HOOKS,
    "on_cancellation": [undo_on_cancel("dr-drill", "DR drill cancelled", rescue_from_journal)],
}


@flow(name="dr-drill", persist_result=True, **DRILL_HOOKS)
def dr_drill(params: DrillParams = DrillParams()) -> DrillResult:
    """Inject a fault, recover the way production does, measure RTO and RPO from real writes, roll back."""
    topology = load_topology(params.topology)
    cluster, _ = topology.cluster(params.cluster)
    run = RunbookRun(
        topology,
        "dr-drill",
        cluster,
        f"DR drill {params.scenario} on {cluster}",
        params,
        start_lines=[
            f"scenario {params.scenario}, recovery {params.recovery_path}",
            "dry run: nothing will be injected" if params.dry_run else "this drill disturbs the cluster",
        ],
        lock="drill",
    )
    # 1. Lock and steady state: the locks are taken before the drill looks.
    with run:
        steady, fenced = _steady_state(topology, cluster, run, "before the drill")
        if not steady.healthy:
            raise run.refuse(not_steady(steady.problems))
        if fenced:
            raise run.refuse(
                "the drill did not start: "
                + "; ".join(
                    f"{n} is fenced ({m.sentence()}); run replica-resync to bring it back" for n, m in fenced.items()
                )
            )
        original = steady.primary
        assert original is not None  # a healthy steady state has one primary
        target = choose_target(topology, cluster, params, original)
        run.reporter.step(f"the fault can be injected: {check_fault(topology, params.scenario, cluster, target)}")
        if params.recovery_path == "alert" and topology.alerting is None:
            raise run.refuse("recovery_path alert needs the topology's alerting section (the alert receiver)")
        plan = drill_plan(params, recovery_runbook(params.scenario), target, original, topology.writer_record(cluster))
        result = DrillResult.planned(params, cluster, original, target, plan, current_run.get_name() or "drill")
        # 2. Dry run: the plan, nothing injected.
        if params.dry_run:
            run.reporter.finish(
                "dry run",
                [result.sentence(), "nothing was injected or changed"],
                tables={"plan": [{"step": i, "action": a} for i, a in enumerate(plan, 1)]},
            )
            return result.model_copy(update={"ok": True})
        return _drill(topology, params, run, result)


def _drill(topology: Topology, params: DrillParams, run: RunbookRun, result: DrillResult) -> DrillResult:
    cluster, target = result.cluster, result.target
    # A direct drill silences the alerts its fault causes (they would page and start a second,
    # alert-driven failover); the alert path must not be silenced: proving it is the point.
    quiet = run.hold(
        PlannedWorkSilence(topology, cluster, "dr-drill", run.reporter, params.recovery_timeout_seconds + 900)
    )
    # 3. Action: canary, baseline, fault, recovery.
    canary, acked = start_canary_baseline(
        topology, cluster, result.canary_run_id, params.canary_interval_seconds, params.baseline_writes, 30
    )
    injection: FaultInjection | None = None
    recovery, measured, action_error = Recovery(), Measured(), None
    try:
        run.reporter.step(f"canary {result.canary_run_id} writing: {acked} writes acknowledged before the fault")
        run.remember(scenario=params.scenario, target=target, original_primary=result.original_primary)
        run.changed = True  # refused here, nothing injected, if a failover took the lock meanwhile
        if params.recovery_path == "direct":
            quiet.begin()
        injection = inject_fault(topology, params.scenario, cluster, target)
        run.reporter.step(injection.sentence())
        recovery = _recover(topology, params, cluster, target, injection, run)
    except Exception as exc:  # noqa: BLE001 - the rollback below runs whatever happened
        action_error = exc
        run.reporter.step(f"the action failed: {type(exc).__name__}: {exc}")
    finally:
        # 4. Measurement (only a fault that happened can be measured).
        if injection is not None:
            measured = _measure(topology, params, cluster, canary, injection, result.canary_run_id, recovery.ok, run)
        journal = canary.stop()  # again: a no-op when the measurement stopped it
    result = result.model_copy(update={"acknowledged": [w.seq for w in journal if w.acked]})

    # 5. Rollback, whatever happened above.
    rolled_back = None
    if params.rollback and injection is not None:
        rolled_back = _rollback(topology, params, cluster, result.original_primary, target, run)
    if action_error is not None and injection is None:
        if isinstance(action_error, PreconditionFailed):
            run.changed = False  # the fault was never injected: only canary rows were written
        raise action_error
    # 6. Report: verdict, tables, trend row, Slack summary.
    result = result.with_outcomes(recovery, measured, rolled_back)
    report_drill(cluster, params, run.reporter, result, injection.at if injection else None)
    if action_error is not None:
        raise action_error
    return result


def _steady_state(
    topology: Topology, cluster: str, run: RunbookRun, when: str
) -> tuple[RegionHealthReport, dict[str, FenceMarker]]:
    """Region health's assessment (one task, every read at once) and the fenced nodes, reported as steps."""
    report, fenced = steady_state(topology, cluster)
    run.reporter.step(f"steady state {when}: {report.sentence()}")
    for problem in report.problems:
        run.reporter.step(f"steady state {when}: {problem.message}", slack=False)
    return report, fenced


def _recover(
    topology: Topology,
    params: DrillParams,
    cluster: str,
    target: str | None,
    injection: FaultInjection,
    run: RunbookRun,
) -> Recovery:
    """Start the recovery runbook the way production would and wait for its outcome."""
    runbook = recovery_runbook(params.scenario)
    if params.recovery_path == "alert":
        # The alert's run is not ours: it may take the cluster lock over; we take it back after.
        run.hand_over("failover")
        labels = {
            "cluster": cluster,
            "node": target or "",
            "region": topology.node(cluster, target).region if target else "",
            "severity": "critical",
            "source": "dr-drill",
        }
        summary = f"DR drill: {params.scenario} injected into {target}"
        payload = alertmanager_payload(ALERT_FOR[params.scenario], labels, injection.at, summary)
        run.reporter.step(post_alert(topology, payload).sentence())
        started = wait_for_started_run(runbook, cluster, injection.at, timeout=60, topology=params.topology)
        run.reporter.step(f"the alert's automation started {runbook} run {started.name}")
        ended = wait_for_run_end(started.id, timeout=params.recovery_timeout_seconds)
        state_name = ended.state.name if ended.state else "?"
        recovery = Recovery(
            ok=bool(ended.state and ended.state.is_completed()),
            sentence=f"{runbook} run {ended.name} ended {state_name}",
        )
        run.take_back(60, "for the measurement and the rollback")
    else:
        state = _recovery_subflow(params, runbook, cluster, target)
        recovery = Recovery(ok=state.is_completed(), sentence=subflow_outcome(runbook, state, prefix=False))
    run.reporter.step(f"recovery: {recovery.sentence}")
    if params.scenario == "primary-freeze":
        run.reporter.step(resume_fault(topology, params.scenario, cluster, target).sentence())
    return recovery


def _recovery_subflow(params: DrillParams, runbook: str, cluster: str, target: str | None) -> Any:
    """Run the recovery runbook as a subflow of the drill (it shares the drill's lock); returns its final state."""
    common: dict[str, Any] = {
        "topology": params.topology,
        "cluster": cluster,
        "lock_wait_seconds": 30,
        "notify": params.notify,
    }
    if runbook == "failover":
        reason = f"DR drill {current_run.get_name() or ''} ({params.scenario})".strip()
        fp = FailoverParams(
            **common,
            node=target,
            reason=reason,
            grace_seconds=params.confirmation_seconds,
            probes=3,
            probe_timeout_seconds=1,
        )
        return failover(fp, return_state=True)
    if runbook == "replica-resync":
        rp = ResyncParams(**common, node=target, verify_timeout_seconds=params.recovery_timeout_seconds)
        return replica_resync(rp, return_state=True)
    return switchover(SwitchoverParams(**common, target=target), return_state=True)


def _measure(
    topology: Topology,
    params: DrillParams,
    cluster: str,
    canary: CanaryWriter,
    injection: FaultInjection,
    canary_run_id: str,
    recovered: bool,
    run: RunbookRun,
) -> Measured:
    """RTO, RPO, catch-up and consistency, from the canary and the nodes themselves."""
    out = Measured()
    try:
        first, journal = canary_after_fault(canary, injection.at, 30 if recovered else 5, params.after_recovery_seconds)
        states, view, present = primary_and_rows(topology, cluster, canary_run_id)
        out.new_primary = new = view.primary if view.reachable else None
        planned = params.scenario == "planned-switchover"
        # With no primary the write outage is still measured (it is the news); the RPO is unknown.
        out.measurement = measure(journal, injection.at, present if new else None, planned=planned)
        out.verdicts = judge(out.measurement, topology.clusters[cluster].objectives)
        if new is None:
            run.reporter.step(f"no reachable primary after recovery ({view.reason})")
        run.reporter.step(out.measurement.sentence())
        for verdict in out.verdicts:
            run.reporter.step(verdict.sentence())
        if new is None:
            return out
        # Catch-up: every streaming replica replays the new primary's position after the last write.
        replicas = [n for n, s in states.items() if n != new and s.reachable and s.role == "replica"]
        waits = catch_up(topology, cluster, new, replicas, 60)
        out.catch_up = [w.sentence() for w in waits]
        out.catch_up_seconds = max((w.seconds for w in waits), default=0.0)
        for line in out.catch_up:
            run.reporter.step(line, slack=False)
        caught = [w.node for w in waits if w.reached]
        skipped = {n: states[n].sentence() for n in topology.clusters[cluster].nodes if n != new and n not in caught}
        out.consistency = consistency_at_common_point(topology, cluster, new, caught, skipped)
        run.reporter.step(out.consistency.sentence())
    except Exception as exc:  # noqa: BLE001 - a failed measurement must never skip the rollback
        run.reporter.step(f"measurement incomplete: {type(exc).__name__}: {exc}")
    return out


def _rollback(
    topology: Topology, params: DrillParams, cluster: str, original: str, target: str | None, run: RunbookRun
) -> Rollback:
    """Put the original topology back: resume, resync every node, switchover back, steady state again."""
    out = Rollback()

    def note(line: str) -> None:
        out.notes.append(line)
        run.reporter.step(f"rollback: {line}")

    try:
        if params.scenario in ("region-outage", "region-partition", "primary-freeze"):
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
        out.ok &= resync.is_completed()
        note(subflow_outcome("replica-resync", resync))
        if params.scenario == "replica-loss":
            note(resume_fault(topology, params.scenario, cluster, target).sentence())
        _, view, _ = primary_and_rows(topology, cluster)
        if view.primary != original:
            back = switchover(
                SwitchoverParams(
                    topology=params.topology, cluster=cluster, target=original, lock_wait_seconds=60, notify=False
                ),
                return_state=True,
            )
            out.ok &= back.is_completed()
            note(subflow_outcome(f"switchover back to {original}", back))
        steady, _ = _steady_state(topology, cluster, run, "after the rollback")
        out.steady_after = steady.healthy
        if steady.primary:
            others = [n for n in topology.clusters[cluster].nodes if n != steady.primary]
            catch_up(topology, cluster, steady.primary, others, 60)
            out.final_consistency = consistency_at_common_point(topology, cluster, steady.primary, others)
            note(f"final check: {out.final_consistency.sentence()}")
    except Exception as exc:  # noqa: BLE001 - a failed rollback is reported, loudly
        out.ok = False
        note(f"FAILED: {type(exc).__name__}: {exc}; run region-health and replica-resync by hand")
    return out
