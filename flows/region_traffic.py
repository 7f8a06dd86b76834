"""Runbook: region traffic, drain a region's application traffic or restore it.

Drain:
1. Read the application's latency records: which regions serve, which are drained.
2. Check the regions that would take the traffic: each app healthy, and (where the
   topology declares capacity) able to serve the load measured from the apps' metrics.
   Otherwise refuse, naming the reason; nothing is changed.
3. (Dry run: show the decision and stop.)  Remove the region's record set and leave a
   drain marker saying when and why; verify the region no longer serves.

Restore: write the region's record set from the topology again (its health check
included) and remove the marker; verify it serves.  The zone ends as it was.
"""

from __future__ import annotations

from typing import Literal

from prefect import flow
from pydantic import BaseModel, Field

from regionops.decisions.traffic import DrainDecision, decide_drain
from regionops.errors import ConfigurationError, PreconditionFailed, VerificationFailed
from regionops.routing import TrafficChange
from regionops.runbook.context import REPORT_HOOKS, RunbookRun
from regionops.runbook.params import ClusterChangeParams, RunbookParams
from regionops.runbook.reporting import RunReporter
from regionops.topology import Topology, load_topology
from tasks.observe import probe_app
from tasks.traffic import drain_region, measure_load, read_traffic, restore_region


class RegionTrafficParams(BaseModel):
    """Parameters of the region-traffic runbook (rendered as a form in the Prefect UI)."""

    topology: str | None = RunbookParams.default("topology", None)
    region: str = Field(description="The region whose application traffic is drained or restored")
    action: Literal["drain", "restore"] = Field(
        "drain", description="drain: send its users elsewhere; restore: take them back"
    )
    reason: str = Field("manual drain", description="Why; kept in the drain marker and the report")
    load_window_seconds: float = Field(2, gt=0, description="How long the apps' request rate is measured")
    dry_run: bool = Field(False, description="Check and decide; change nothing")
    notify: bool = ClusterChangeParams.default("notify", True)


class RegionTrafficResult(BaseModel):
    """What the run decided and did."""

    region: str
    action: str
    dry_run: bool
    serving_before: list[str]
    serving_after: list[str]
    decision: DrainDecision | None = None
    change: TrafficChange | None = None

    def sentence(self) -> str:
        """One line for logs and reports."""
        if self.dry_run:
            verdict = self.decision.sentence() if self.decision else f"would {self.action} {self.region}"
            return f"dry run: {verdict}; nothing was changed"
        return f"{self.action} {self.region}: serving now from {', '.join(self.serving_after) or 'no region'}"


@flow(name="region-traffic", persist_result=True, **REPORT_HOOKS)
def region_traffic(params: RegionTrafficParams) -> RegionTrafficResult:
    """Drain a region's application traffic (after checking the others can take it), or restore it."""
    topology = load_topology(params.topology)
    if params.region not in topology.regions:
        raise ConfigurationError(
            f"parameter region: unknown region {params.region!r} "
            f"(the topology's regions: {', '.join(topology.regions)})"
        )
    run = RunbookRun(
        topology,
        "region-traffic",
        params.region,
        f"{params.action.capitalize()} app traffic of {params.region}",
        params,
        start_lines=[f"reason: {params.reason}"] + (["dry run: nothing will be changed"] if params.dry_run else []),
        lock="none",  # it takes no lock: the drain marker says who drained a region, and why
    )
    with run:  # an error ends the report "refused" (a drain the others cannot take) or "failed"
        return _change_traffic(topology, params, run.reporter)


def _change_traffic(topology: Topology, params: RegionTrafficParams, reporter: RunReporter) -> RegionTrafficResult:
    state = read_traffic(topology)
    reporter.step(state.sentence(), slack=False)
    result = RegionTrafficResult(
        region=params.region,
        action=params.action,
        dry_run=params.dry_run,
        serving_before=sorted(state.serving),
        serving_after=sorted(state.serving),
    )
    if params.action == "drain":
        decision = _decide(topology, params, sorted(state.serving))
        result.decision = decision
        reporter.step(decision.sentence())
        if not decision.allowed:
            raise PreconditionFailed(f"drain of {params.region} refused: {decision.reason}; nothing was changed")
    if params.dry_run:
        reporter.finish("dry run", [result.sentence()])
        return result
    change = (
        drain_region(topology, params.region, params.reason)
        if params.action == "drain"
        else restore_region(topology, params.region)
    )
    result.change = change
    reporter.step(change.sentence())
    after = read_traffic(topology)
    result.serving_after = sorted(after.serving)
    serves = params.region in after.serving
    if serves == (params.action == "drain"):
        raise VerificationFailed(f"after the {params.action}, {after.sentence()}")
    reporter.finish(
        "succeeded",
        [result.sentence()],
        tables={"records": [{"region": r, "serving": r in result.serving_after} for r in topology.regions]},
    )
    return result


def _decide(topology: Topology, params: RegionTrafficParams, serving: list[str]) -> DrainDecision:
    """Probe the other serving regions' apps and measure every serving region's load; decide (pure)."""
    others = [r for r in serving if r != params.region]
    probes = {r: probe_app.submit(topology, r) for r in others}
    loads = {r: measure_load.submit(topology, r, params.load_window_seconds) for r in serving}
    unhealthy: dict[str, str] = {}
    for region, future in probes.items():
        probe = future.result()
        if not probe.healthy:
            unhealthy[region] = probe.sentence()
    app_traffic = topology.app().traffic
    capacity = app_traffic.capacity_rps if app_traffic else {}
    return decide_drain(params.region, serving, unhealthy, {r: f.result() for r, f in loads.items()}, capacity)
