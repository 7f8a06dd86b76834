"""The release runbook against the session lab's real apps (HTTP), moto's S3 and CloudFront, Prefect.

Bake times are a second; each test leaves every app on the version it started with
(the `restored` fixture puts them back through the lab target if a test did not).
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from prefect.flow_runs import resume_flow_run

from flows.release import ReleaseParams, release
from regionops.drivers.cdn import cdn_for
from regionops.drivers.deploy import app_version
from regionops.drivers.objectstore import objectstore_for
from regionops.errors import ConfigurationError
from regionops.lab.assets import build_assets
from regionops.lab.lab import LAB_CDN
from regionops.release.assets import publish, scan
from regionops.release.targets import target_for
from tests import ha_tools as ha

pytestmark = pytest.mark.lab
REGIONS = ("eu", "us", "apac")
FAST = {"bake_seconds": 1.0, "probe_interval_seconds": 0.3, "healthy_probes": 2, "deploy_timeout_seconds": 30}


def versions(lab) -> dict[str, str | None]:
    """What each region's app answers on /version now."""
    topo = lab.topology()
    return {r: app_version(topo.regions[r].app_url) for r in REGIONS}


@pytest.fixture
def restored(lab) -> Iterator[dict[str, str | None]]:
    """Every app's version before the test; each is put back afterwards if the test left it elsewhere."""
    before = versions(lab)
    assert None not in before.values(), before
    yield before
    target = target_for(lab.topology())
    for region, version in before.items():
        if app_version(lab.topology().regions[region].app_url) != version:
            target.deploy(region, version)
    assert versions(lab) == before


def params(lab, version: str, **kw) -> ReleaseParams:
    return ReleaseParams(topology=str(lab.cfg.topology_path), version=version, notify=True, **{**FAST, **kw})


@contextmanager
def watching(lab, regions: tuple[str, ...]) -> Iterator[dict[str, set[str]]]:
    """Every version the regions' apps answer while the block runs (polled every 50 ms)."""
    seen: dict[str, set[str]] = {r: set() for r in regions}
    stop = threading.Event()
    urls = {r: lab.topology().regions[r].app_url for r in regions}

    def poll() -> None:
        with httpx.Client(timeout=1) as client:
            while not stop.wait(0.05):
                for region, url in urls.items():
                    seen[region].add(app_version(url, client) or "unreachable")

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(5)


def in_thread(fn) -> threading.Thread:
    """Run ``fn`` in a thread that sees this test's Prefect settings."""
    thread = threading.Thread(target=contextvars.copy_context().run, args=(fn,), daemon=True)
    thread.start()
    return thread


def error_of(state) -> str:
    assert state.is_failed(), state
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the error is the point
        return f"{type(exc).__name__}: {exc}"
    raise AssertionError("a failed state carries its error")


def test_a_good_version_moves_every_region_wave_by_wave_with_assets_and_gates(lab, restored):
    topo = lab.topology()
    store = objectstore_for(topo)
    old, new = restored["eu"], f"{restored['eu']}-good{int(time.time())}"
    # The buckets hold the running version's assets, as after its own release.
    files = scan(build_assets(lab.cfg.lab_dir, old), "static/")
    for region in REGIONS:
        publish(store, region, topo.assets_bucket(region), files, topo.app().assets.cache_control)
    build_assets(lab.cfg.lab_dir, new)
    style_etag = {r: store.head(topo.assets_bucket(r), "static/style.css").etag for r in REGIONS}

    state = release(params(lab, new), return_state=True)
    result = state.result()

    assert result.ok and versions(lab) == {r: new for r in REGIONS}
    assert [w.regions for w in result.waves] == [["eu"], ["us", "apac"]]
    assert all(w.outcome == "done" for w in result.waves)
    # Gates: each region passed its health probes and its bake, with measurements.
    for region in REGIONS:
        checks = {g.check: g for g in result.gates if g.region == region}
        assert checks["health"].passed and checks["bake"].passed
        assert checks["bake"].requests > 0 and checks["bake"].error_rate == 0
    # Assets: only what changed was uploaded, to every bucket, with type and cache headers.
    for publish_result in result.assets:
        assert sorted(publish_result.uploaded) == ["static/app.js", "static/index.html"]
        assert sorted(publish_result.unchanged) == ["static/img/logo.svg", "static/style.css"]
    for region in REGIONS:
        bucket = topo.assets_bucket(region)
        assert new in store.get_bytes(bucket, "static/app.js").decode()
        meta = store.head_metadata(bucket, "static/app.js")
        assert meta["content-type"] == "text/javascript" and meta["cache-control"] == "public, max-age=60"
        assert store.head(bucket, "static/style.css").etag == style_etag[region]
    assert result.invalidation is not None
    assert sorted(result.invalidation.paths) == ["/static/app.js", "/static/index.html"]
    assert sorted(result.invalidation.paths) in [sorted(p) for p in cdn_for(topo).invalidated_paths(LAB_CDN)]
    report = ha.report_markdown(ha.run_id(state))
    assert "# Release of app" in report and "succeeded" in report
    assert "## gates" in report and "| 2 | apac | bake |" in report


def test_a_bad_version_stops_at_the_canary_and_is_rolled_back(lab, restored):
    before = restored
    with watching(lab, ("us", "apac")) as seen:
        state = release(params(lab, "2.0.0-bad"), return_state=True)
    error = error_of(state)
    assert "RolledBack" in error and "gate failed: eu" in error and "error rate" in error
    # No other region ever ran it; every region serves its previous version.
    assert seen["us"] == {before["us"]} and seen["apac"] == {before["apac"]}
    assert versions(lab) == before
    report = ha.report_markdown(ha.run_id(state))
    assert "rolled back" in report and "| 1 | eu | bake |" in report and "FAIL" in report
    assert "| 2 | us, apac | not started |" in report


def test_a_rejected_approval_rolls_back_and_a_second_release_is_refused_meanwhile(lab, restored):
    before = restored
    version = f"{before['eu']}-appr"
    build_assets(lab.cfg.lab_dir, version)
    box: dict = {}
    with watching(lab, ("us", "apac")) as seen:
        first = in_thread(
            lambda: box.update(state=release(params(lab, version, require_approval=True), return_state=True))
        )
        try:
            paused = ha.paused_run(lab, "release", timeout=60)
            assert versions(lab)["eu"] == version  # the canary wave is done; the run waits before wave 2
            second = release(params(lab, version), return_state=True)
            refusal = error_of(second)
            assert "another release of app is running" in refusal and "nothing was changed" in refusal
            resume_flow_run(paused.id, run_input={"approver": "test", "reason": "test says no", "confirm": "no"})
        finally:
            first.join(90)
    error = error_of(box["state"])
    assert "approval rejected" in error and "rolled back eu to" in error
    assert versions(lab) == before
    assert seen["us"] == {before["us"]} and seen["apac"] == {before["apac"]}


def test_an_approval_that_times_out_rolls_back(lab, restored):
    before = restored
    version = f"{before['eu']}-late"
    build_assets(lab.cfg.lab_dir, version)
    state = release(params(lab, version, require_approval=True, approval_timeout_seconds=2), return_state=True)
    error = error_of(state)
    assert "no approval within 2 s" in error and "rolled back eu to" in error
    assert versions(lab) == before
    assert "rejected, rolled back" in ha.report_markdown(ha.run_id(state))


@pytest.mark.parametrize(
    "waves, version, problem",
    [
        ([["eu"], ["us", "mars"]], "9.9.9", "wave 2: unknown region 'mars'"),
        ([["eu"], ["us"]], "9.9.9", "the plan skips region(s) apac"),
        ([["eu", "us"], ["us", "apac"]], "9.9.9", "region 'us' is already in wave 1"),
    ],
)
def test_a_bad_wave_plan_is_a_named_parameter_error_before_anything_changes(lab, restored, waves, version, problem):
    state = release(params(lab, version, waves=waves), return_state=True)
    error = error_of(state)
    assert "ConfigurationError" in error and "parameter waves" in error and problem in error
    assert versions(lab) == restored


def test_an_empty_version_is_a_named_parameter_error(lab):
    with pytest.raises(ValueError, match="version must not be empty"):
        ReleaseParams(topology=str(lab.cfg.topology_path), version="  ")
    with pytest.raises(ConfigurationError, match="parameter waves"):
        from regionops.decisions.release import plan_waves

        plan_waves(list(REGIONS), "eu", [[]])


def test_a_dry_run_shows_asset_changes_and_changes_nothing(lab, restored):
    topo = lab.topology()
    version = f"{restored['eu']}-dry"
    build_assets(lab.cfg.lab_dir, version)
    store = objectstore_for(topo)
    before = {
        r: store.get_bytes(topo.assets_bucket(r), "static/app.js")
        for r in REGIONS
        if store.head(topo.assets_bucket(r), "static/app.js")
    }
    result = release(params(lab, version, dry_run=True))
    assert result.dry_run and all(p.dry_run and "static/app.js" in p.uploaded for p in result.assets)
    assert versions(lab) == restored
    assert {r: store.get_bytes(topo.assets_bucket(r), "static/app.js") for r in before} == before
