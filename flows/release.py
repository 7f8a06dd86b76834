"""Runbook: multi-region release in waves, with health gates, bake time, approval and automatic rollback.

1. Check the input against the topology (waves name every region exactly once, the
   version is not empty, its static assets exist): a bad input is a named parameter
   error before anything changes.
2. Take the application's release lock: a second release is refused (or queued for
   ``lock_wait_seconds``), visibly.
3. Record the version each region runs now (the target's own report, with a reference
   to return to exactly: the ECS task definition, for instance).
4. Publish the version's static assets to every region's bucket, uploading only objects
   whose content changed (content type, cache headers), and invalidate the changed paths
   on the CDN.
5. For each wave: deploy its regions in parallel; wait until each runs the new version
   and passes its health probe N times in a row; bake, watching error rate and p95
   latency from the apps' metrics (a failing gate stops the release); between waves,
   pause for a typed approval when asked.
6. On any failure, rejection or approval timeout: roll every region already changed
   back to its recorded version (and the assets back to the previous version's), and
   verify each runs it healthily again.
7. Verify every region runs the new version and is healthy; report each wave, each
   gate's measurements and the outcome (UI artifact and Slack thread).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from prefect import flow, get_client
from prefect.exceptions import FlowPauseTimeout
from prefect.runtime import flow_run as current_run
from prefect.states import Running
from pydantic import BaseModel, Field, field_validator

from regionops.decisions.release import plan_waves
from regionops.drivers.cdn import Invalidation
from regionops.drivers.deploy import RunningVersion
from regionops.errors import (
    ApprovalRejected,
    ConfigurationError,
    PreconditionFailed,
    RolledBack,
    RunbookError,
    VerificationFailed,
)
from regionops.model.release import GateMeasurement, GateThresholds
from regionops.release.assets import AssetFile, BucketPublish, changed_paths, scan, source_dir
from regionops.runbook.approval import request_approval
from regionops.runbook.context import CHANGE_HOOKS, RunbookRun
from regionops.runbook.params import ClusterChangeParams, RunbookParams
from regionops.runbook.reporting import RunReporter
from regionops.topology import Topology, load_topology
from tasks.release import bake_region, deploy_region, invalidate_cdn, publish_assets, running_version, wait_healthy

VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"


class ReleaseParams(BaseModel):
    """Parameters of the release runbook (rendered as a form in the Prefect UI; CI fills `version`)."""

    topology: str | None = RunbookParams.default("topology", None)
    version: str = Field(description="The version to release, e.g. 1.4.2 (an image tag, a build number)")
    waves: list[list[str]] | None = Field(
        None,
        description="Regions per wave, in order, every region exactly once; default: the canary region "
        "alone, then all the others",
    )
    bake_seconds: float = Field(300, ge=0, description="How long each wave is watched before the next one")
    probe_interval_seconds: float = Field(5, gt=0, description="Time between health probes and gate checks")
    healthy_probes: int = Field(3, ge=1, description="Consecutive healthy probes a region needs after its deploy")
    max_error_rate: float = Field(0.01, ge=0, le=1, description="Gate: largest share of 5xx answers during the bake")
    max_p95_ms: float = Field(250, gt=0, description="Gate: largest p95 latency (ms) during the bake")
    min_requests: int = Field(1, ge=0, description="Gate: fewer requests measured than this fails the gate")
    deploy_timeout_seconds: float = Field(
        600, gt=0, description="How long a region may take to run the new version and pass its probes"
    )
    require_approval: bool = Field(False, description="Pause for a typed approval in the UI between waves")
    approval_timeout_seconds: int = Field(3600, gt=0, description="An approval not given in time rolls back")
    publish_assets: bool = Field(True, description="Publish the version's static assets and invalidate the CDN")
    assets_dir: str | None = Field(
        None, description="Directory of this version's static assets; default the topology's assets source"
    )
    dry_run: bool = Field(
        False, description="Check, record versions, show the plan and the asset changes; change nothing"
    )
    lock_wait_seconds: float = Field(
        0, ge=0, description="0: refuse while another release runs; otherwise queue behind it this long"
    )
    reason: str | None = Field(None, description="Why (change ticket, CI pipeline); quoted in the report")
    notify: bool = ClusterChangeParams.default("notify", True)

    @field_validator("version", mode="before")
    @classmethod
    def _version_named(cls, value: object) -> str:
        # `--set version=2` arrives as a number: a version is a name, whatever it looks like.
        value = str(value if value is not None else "").strip()
        if not value:
            raise ValueError("version must not be empty")
        if not re.match(VERSION_PATTERN, value):
            raise ValueError(
                f"version {value!r} may hold only letters, digits and . _ + - (and start with one letter or digit)"
            )
        return value

    def limits(self) -> GateThresholds:
        """The gate thresholds of this run."""
        return GateThresholds(
            max_error_rate=self.max_error_rate, max_p95_ms=self.max_p95_ms, min_requests=self.min_requests
        )


class WaveOutcome(BaseModel):
    """One wave: its regions and what happened."""

    wave: int
    regions: list[str]
    outcome: str


class ReleaseResult(BaseModel):
    """What the release did (or would do, in a dry run)."""

    application: str
    version: str
    ok: bool
    dry_run: bool
    outcome: str
    waves: list[WaveOutcome] = []
    before: dict[str, str | None] = {}
    after: dict[str, str | None] = {}
    gates: list[GateMeasurement] = []
    assets: list[BucketPublish] = []
    invalidation: Invalidation | None = None
    rolled_back: list[str] = []

    def sentence(self) -> str:
        """One line for logs and reports."""
        if self.dry_run:
            return f"dry run: would release {self.application} {self.version} in {len(self.waves)} wave(s)"
        return f"{self.application} {self.version}: {self.outcome}"


class _Changed:
    """What the release has changed so far: the rollback's input."""

    def __init__(self, result: ReleaseResult):
        self.result = result
        self.regions: list[str] = []
        self.assets = False


@flow(name="release", persist_result=True, **CHANGE_HOOKS)
def release(params: ReleaseParams) -> ReleaseResult:
    """Release a version of the application region by region, stopping and rolling back when one gets worse."""
    topology = load_topology(params.topology)
    app = topology.app()
    regions = list(topology.regions)
    # 1. Input errors name the parameter; nothing has been touched yet.
    waves = plan_waves(regions, app.release.canary_region or regions[0], params.waves)
    files = _asset_files(topology, params)

    changed = _Changed(
        ReleaseResult(
            application=app.name,
            version=params.version,
            ok=False,
            dry_run=params.dry_run,
            outcome="started",
            waves=[WaveOutcome(wave=i, regions=w, outcome="pending") for i, w in enumerate(waves, 1)],
        )
    )
    run = RunbookRun(
        topology,
        "release",
        app.name,
        f"Release of {app.name} {params.version}",
        params,
        start_lines=[
            f"waves: {' -> '.join('+'.join(w) for w in waves)}",
            f"started by: {params.reason or 'a human'}",
            "dry run: nothing will be changed" if params.dry_run else "this run changes every region",
        ],
        lock="release",  # 2. one release at a time: refused, or queued lock_wait_seconds, visibly
        on_error=lambda exc: _unchanged(run.reporter, exc, changed),
    )
    with run:
        return _release(topology, params, waves, files, run.reporter, changed)


def _unchanged(reporter: RunReporter, exc: BaseException, changed: _Changed) -> None:
    """The report of a release that stopped before changing anything (a rollback reports the others)."""
    if not changed.regions and not changed.assets:
        status = "refused" if isinstance(exc, (PreconditionFailed, ConfigurationError)) else "failed"
        reporter.finish(status, [f"{type(exc).__name__}: {exc}", "nothing was changed"], tables=_tables(changed))


def _asset_files(topology: Topology, params: ReleaseParams) -> list[AssetFile] | None:
    """The version's asset files, or None when the release publishes none."""
    template = params.assets_dir or topology.app().assets.source
    if not params.publish_assets or not template:
        return None
    return scan(source_dir(template, params.version), topology.app().assets.prefix)


def _release(
    topology: Topology,
    params: ReleaseParams,
    waves: list[list[str]],
    files: list[AssetFile] | None,
    reporter: RunReporter,
    changed: _Changed,
) -> ReleaseResult:
    result = changed.result
    regions = list(topology.regions)

    # 3. Where every region is now: the rollback returns exactly there.
    futures = {r: running_version.submit(topology, r) for r in regions}
    before: dict[str, RunningVersion] = {r: f.result() for r, f in futures.items()}
    result.before = {r: v.version for r, v in before.items()}
    unknown = [v.sentence() for v in before.values() if v.version is None]
    if unknown:
        raise PreconditionFailed(
            f"cannot record the running version, so no rollback would be possible: {'; '.join(unknown)}"
        )
    for v in before.values():
        reporter.step(v.sentence(), slack=False)

    # 4. Static assets, then the CDN paths that changed.
    if files is not None:
        result.assets = [
            f.result() for f in [publish_assets.submit(topology, r, files, params.dry_run) for r in regions]
        ]
        changed.assets = any(p.uploaded for p in result.assets) and not params.dry_run
        for p in result.assets:
            reporter.step(p.sentence(), slack=False)
        paths = changed_paths(result.assets)
        if paths and topology.app().assets.cdn_distribution and not params.dry_run:
            result.invalidation = invalidate_cdn(topology, paths)
            reporter.step(result.invalidation.sentence())
    else:
        reporter.step("no static assets published for this release")

    if params.dry_run:
        result.ok, result.outcome = True, "dry run"
        reporter.finish("dry run", [result.sentence(), "nothing was changed"], tables=_tables(changed))
        return result

    # 5. Waves.
    try:
        for i, wave in enumerate(waves, start=1):
            _run_wave(topology, params, i, wave, reporter, changed)
            if params.require_approval and i < len(waves):
                _approve(reporter, params, waves[i], i)
        # 7. Every region runs the new version, healthily.
        after = {r: running_version.submit(topology, r) for r in regions}
        result.after = {r: f.result().version for r, f in after.items()}
        wrong = [f"{r} runs {v}" for r, v in result.after.items() if v != params.version]
        if wrong:
            raise VerificationFailed(f"after the last wave not every region runs {params.version}: {', '.join(wrong)}")
    except Exception as exc:
        _rollback(topology, params, before, reporter, changed, exc)
        raise RolledBack(
            f"release of {params.version} stopped: {exc}; rolled back "
            f"{', '.join(f'{r} to {before[r].version}' for r in changed.regions) or 'nothing'}"
        ) from exc
    result.ok, result.outcome = True, f"released to every region ({', '.join(regions)})"
    reporter.finish("succeeded", [result.sentence()], tables=_tables(changed))
    return result


def _run_wave(
    topology: Topology, params: ReleaseParams, i: int, wave: list[str], reporter: RunReporter, changed: _Changed
) -> None:
    """Deploy one wave's regions in parallel, wait for N healthy probes each, bake them; raise on any failure."""
    result = changed.result
    outcome = result.waves[i - 1]
    reporter.step(f"wave {i}: deploying {params.version} to {', '.join(wave)}")
    outcome.outcome = "deploying"
    changed.regions += wave  # before the deploy: a deploy that fails half-way has changed the region too
    deploys = {r: deploy_region.submit(topology, r, params.version) for r in wave}
    _results(deploys, reporter, lambda d: d.sentence())
    waits = {
        r: wait_healthy.submit(
            topology,
            r,
            params.version,
            i,
            params.healthy_probes,
            params.probe_interval_seconds,
            params.deploy_timeout_seconds,
        )
        for r in wave
    }
    result.gates += _results(waits, reporter, lambda g: g.sentence())
    outcome.outcome = "baking"
    bakes = {
        r: bake_region.submit(topology, r, i, params.limits(), params.bake_seconds, params.probe_interval_seconds)
        for r in wave
    }
    gates = _results(bakes, reporter, lambda g: g.sentence())
    result.gates += gates
    failed = [g for g in gates if not g.passed]
    if failed:
        outcome.outcome = "gate failed"
        raise VerificationFailed("gate failed: " + "; ".join(f"{g.region}: {g.reason}" for g in failed))
    outcome.outcome = "done"


def _results(futures: dict[str, Any], reporter: RunReporter, describe: Any) -> list[Any]:
    """Every future's result (each reported); the first error is raised after all have finished."""
    done, errors = [], []
    for region, future in futures.items():
        try:
            value = future.result()
        except Exception as exc:  # noqa: BLE001 - collected, re-raised below after every region is known
            errors.append(f"{region}: {exc}")
            reporter.step(f"{region}: {type(exc).__name__}: {exc}")
            continue
        done.append(value)
        reporter.step(describe(value))
    if errors:
        raise RunbookError("; ".join(errors))
    return done


def _approve(reporter: RunReporter, params: ReleaseParams, next_wave: list[str], wave: int) -> None:
    """Typed approval before the next wave; a rejection or a timeout raises ApprovalRejected (rollback follows)."""
    phrase = f"release {params.version} to {', '.join(next_wave)}"
    plan = [f"wave {wave} is done and healthy", f"deploy {params.version} to {', '.join(next_wave)}, then bake"]
    try:
        request_approval(
            reporter,
            plan,
            phrase,
            params.approval_timeout_seconds,
            on_reject="every region changed so far is rolled back",
        )
    except FlowPauseTimeout as exc:
        # Prefect leaves a timed-out pause to fail the run; the rollback still has to run, so
        # this run takes itself out of the pause before rolling back.
        _resume_self()
        raise ApprovalRejected(f"no approval within {params.approval_timeout_seconds} s") from exc


def _resume_self() -> None:
    run_id = current_run.get_id()
    if run_id:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(run_id, Running(message="approval timed out: rolling back"), force=True)


def _rollback(
    topology: Topology,
    params: ReleaseParams,
    before: dict[str, RunningVersion],
    reporter: RunReporter,
    changed: _Changed,
    cause: BaseException,
) -> None:
    """Return every changed region to its recorded version (and the assets), verify, and report."""
    result = changed.result
    result.outcome = "rolling back"
    reporter.step(
        f"release stopped ({type(cause).__name__}: {cause}); rolling back {', '.join(changed.regions) or 'no region'}"
    )
    problems: list[str] = []
    deploys = {r: deploy_region.submit(topology, r, before[r].version or "", before[r].ref) for r in changed.regions}
    for region, future in deploys.items():
        try:
            reporter.step(f"rollback: {future.result().sentence()}")
        except Exception as exc:  # noqa: BLE001 - every region gets its chance; all problems reported
            problems.append(f"{region}: rollback deploy failed: {exc}")
    waits = {
        r: wait_healthy.submit(
            topology,
            r,
            before[r].version or "",
            0,
            params.healthy_probes,
            params.probe_interval_seconds,
            params.deploy_timeout_seconds,
        )
        for r in changed.regions
        if not any(p.startswith(f"{r}:") for p in problems)
    }
    for region, waiting in waits.items():
        try:
            gate = waiting.result()
            result.gates.append(gate)
            reporter.step(f"rollback verified: {gate.sentence()}")
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{region}: not healthy on {before[region].version} after rollback: {exc}")
    if changed.assets:
        problems += _restore_assets(topology, params, before, reporter)
    result.rolled_back = list(changed.regions)
    for w in result.waves:
        if w.outcome == "pending":
            w.outcome = "not started"
    after = {r: running_version.submit(topology, r) for r in topology.regions}
    result.after = {r: f.result().version for r, f in after.items()}
    rejected = isinstance(cause, ApprovalRejected)
    if problems:
        result.outcome = "ROLLBACK INCOMPLETE"
        reporter.finish(
            "rollback failed",
            [f"{type(cause).__name__}: {cause}", *problems, "act now: see runbooks/release-rollback.md"],
            tables=_tables(changed),
        )
        raise RunbookError("rollback incomplete: " + "; ".join(problems)) from cause
    result.outcome = "rolled back"
    reporter.finish(
        "rejected, rolled back" if rejected else "rolled back",
        [
            f"{type(cause).__name__}: {cause}",
            f"rolled back {', '.join(f'{r} to {before[r].version}' for r in changed.regions) or 'nothing'}; "
            f"every region runs its previous version",
        ],
        tables=_tables(changed),
    )


def _restore_assets(
    topology: Topology, params: ReleaseParams, before: dict[str, RunningVersion], reporter: RunReporter
) -> list[str]:
    """Publish the previous version's assets again (only what differs), and invalidate those paths."""
    previous = Counter(v.version for v in before.values()).most_common(1)[0][0] or ""
    template = topology.app().assets.source
    if not template:
        return [f"static assets of {params.version} stay published: no assets source to restore {previous} from"]
    try:
        files = scan(source_dir(template, previous), topology.app().assets.prefix)
    except PreconditionFailed as exc:
        return [f"static assets of {params.version} stay published: {exc}"]
    restored = [f.result() for f in [publish_assets.submit(topology, r, files, False) for r in topology.regions]]
    for p in restored:
        reporter.step(f"rollback: {p.sentence()} (back to {previous})", slack=False)
    paths = changed_paths(restored)
    if paths and topology.app().assets.cdn_distribution:
        reporter.step(f"rollback: {invalidate_cdn(topology, paths).sentence()}")
    return []


def _tables(changed: _Changed) -> dict[str, list[dict[str, Any]]]:
    result = changed.result
    return {
        "waves": [{"wave": w.wave, "regions": ", ".join(w.regions), "outcome": w.outcome} for w in result.waves],
        "gates": [g.row() for g in result.gates],
        "versions": [{"region": r, "before": v, "after": result.after.get(r)} for r, v in result.before.items()],
        "assets": [
            {
                "region": p.region,
                "bucket": p.bucket,
                "uploaded": ", ".join(p.uploaded) or "-",
                "unchanged": len(p.unchanged),
            }
            for p in result.assets
        ],
    }


__all__ = ["release", "ReleaseParams", "ReleaseResult"]
