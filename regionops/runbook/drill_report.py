"""The DR drill's report: its tables (objectives, figures, timeline, rollback) and its trend across drills."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect.runtime import flow_run as current_run

from regionops.runbook.drill import DrillParams, DrillResult
from regionops.runbook.reporting import RunReporter, append_trend, artifact_key

TREND_ROWS = 200


def trend_key(cluster: str) -> str:
    """The stable artifact key of a cluster's drill trend table."""
    return artifact_key(f"dr-drill-trend-{cluster}")


def report_drill(
    cluster: str, params: DrillParams, reporter: RunReporter, result: DrillResult, fault_at: datetime | None
) -> None:
    """Finish the drill's report: summary, figures against the objectives, timeline, rollback, trend."""
    t0 = fault_at or reporter.started_at
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
    trend = append_trend(
        trend_key(cluster),
        _trend_row(params, result),
        f"DR drills of {cluster}: one row per drill, newest last",
        keep=TREND_ROWS,
    )
    reporter.finish(
        "passed" if result.ok else "failed",
        summary,
        tables={
            "objectives": objectives,
            "figures": _figures(params, result),
            "timeline": timeline,
            "rollback": [{"step": i, "outcome": s} for i, s in enumerate(result.rollback, 1)],
            "trend (last 10 drills)": trend[-10:],
        },
    )


def _figures(params: DrillParams, result: DrillResult) -> list[dict[str, Any]]:
    m = result.measurement
    if m is None:
        return []
    rto = "RTO (write outage)" if params.scenario == "planned-switchover" else "RTO (fault -> first acknowledged write)"
    return [
        {"figure": rto, "value": f"{m.rto_seconds} s"},
        {"figure": "RPO (acknowledged writes lost)", "value": m.rpo_sentence().removeprefix("RPO ")},
        {
            "figure": "write outage (longest gap between acknowledgements)",
            "value": f"{m.unavailable_seconds:.2f} s"
            + (" and still unavailable at the end" if m.still_unavailable else ""),
        },
        {"figure": "replicas caught up within", "value": f"{result.catch_up_seconds} s"},
        {"figure": "canary writes acknowledged", "value": f"{m.writes_acknowledged} of {m.writes_sent}"},
        {"figure": "late acknowledgements (committed after the client gave up)", "value": str(len(m.late_acks))},
    ]


def _trend_row(params: DrillParams, result: DrillResult) -> dict[str, Any]:
    """This drill's row in the trend table."""
    m = result.measurement
    return {
        "date (UTC)": f"{datetime.now(UTC):%Y-%m-%d %H:%M}",
        "run": current_run.get_name() or "",
        "scenario": params.scenario,
        "path": params.recovery_path,
        "RTO s": m.rto_seconds if m else None,
        "RPO rows": m.rpo_rows if m else None,
        "RPO s": m.rpo_seconds if m else None,
        "RPO bytes": m.rpo_bytes if m else None,
        "outage s": m.unavailable_seconds if m else None,
        "consistent": bool(result.consistency and result.consistency.ok),
        "result": "pass" if result.ok else "FAIL",
    }
