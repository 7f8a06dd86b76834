"""Release and drain decisions, pure: wave plans, gates over metric readings, health waits, drains."""

from __future__ import annotations

import pytest

from regionops.decisions.release import evaluate_gate, plan_waves, quantile
from regionops.decisions.traffic import decide_drain
from regionops.drivers.appmetrics import parse_metrics
from regionops.drivers.deploy import RunningVersion, image_version, render
from regionops.errors import ConfigurationError, DeadlineExceeded
from regionops.lab.app_metrics import AppMetrics
from regionops.model.probes import AppProbe
from regionops.model.release import GateThresholds, MetricsSample
from regionops.release.health import wait_healthy

REGIONS = ["eu", "us", "apac"]
INF = float("inf")


def test_default_waves_are_the_canary_then_the_rest():
    assert plan_waves(REGIONS, "us", None) == [["us"], ["eu", "apac"]]
    assert plan_waves(["eu"], "eu", None) == [["eu"]]


@pytest.mark.parametrize(
    "waves, problem",
    [
        ([["eu"], ["us", "mars"]], "wave 2: unknown region 'mars'"),
        ([["eu"], ["us"]], "the plan skips region(s) apac"),
        ([["eu"], [], ["us", "apac"]], "wave 2 is empty"),
        ([["eu", "eu"], ["us", "apac"]], "region 'eu' is already in wave 1"),
    ],
)
def test_bad_wave_plans_name_the_parameter_and_the_problem(waves, problem):
    with pytest.raises(ConfigurationError, match="parameter waves") as err:
        plan_waves(REGIONS, "eu", waves)
    assert problem in str(err.value)


def sample(requests=0.0, errors=0.0, buckets=None, reachable=True) -> MetricsSample:
    return MetricsSample(region="eu", reachable=reachable, requests=requests, errors=errors, buckets=buckets or {})


def test_quantile_interpolates_inside_the_bucket_like_histogram_quantile():
    assert quantile(0.95, {0.1: 0, 0.2: 100, INF: 100}) == pytest.approx(0.195)
    assert quantile(0.5, {0.1: 10, INF: 10}) == pytest.approx(0.05)
    assert quantile(0.95, {0.1: 0, INF: 10}) == 0.1  # beyond the largest finite bound
    assert quantile(0.95, {INF: 0}) is None


def test_gate_passes_within_limits_and_names_each_exceeded_limit():
    limits = GateThresholds(max_error_rate=0.05, max_p95_ms=100)
    before = sample(100, 1, {0.05: 100, 0.5: 100, INF: 100})
    good = evaluate_gate(before, sample(200, 2, {0.05: 200, 0.5: 200, INF: 200}), limits, wave=1, check="bake")
    assert good.passed and good.error_rate == pytest.approx(0.01) and "within limits" in good.reason
    bad = evaluate_gate(before, sample(200, 41, {0.05: 110, 0.5: 200, INF: 200}), limits, wave=1, check="bake")
    assert (
        not bad.passed and "error rate 40.0% > 5.0%" in bad.reason and "p95" in bad.reason and "> 100 ms" in bad.reason
    )


def test_gate_fails_without_traffic_or_metrics_and_handles_a_counter_reset():
    limits = GateThresholds(min_requests=5)
    assert "only 0 request(s)" in evaluate_gate(sample(10), sample(10), limits, wave=1, check="bake").reason
    assert not evaluate_gate(sample(), sample(reachable=False), limits, wave=1, check="bake").passed
    reset = evaluate_gate(sample(1000, 0), sample(10, 5, {INF: 10}), GateThresholds(), wave=1, check="bake")
    assert reset.requests == 10 and reset.errors == 5 and not reset.passed


def test_parse_metrics_reads_the_apps_exposition_and_leaves_out_scrapes():
    metrics = AppMetrics("eu")
    metrics.set_version("1.2.3")
    metrics.observe("GET", "/read", 500, 0.02)
    metrics.observe("GET", "/health", 200, 0.004)
    metrics.observe("GET", "/metrics", 200, 3.0)
    parsed = parse_metrics("eu", metrics.render().decode())
    assert (parsed.requests, parsed.errors, parsed.version) == (2, 1, "1.2.3")
    assert parsed.buckets[INF] == 2 and parsed.buckets[0.005] == 1


class FakeTarget:
    kind = "fake"

    def __init__(self, versions):
        self.versions = iter(versions)

    def current(self, region):
        return RunningVersion(region=region, version=next(self.versions))

    def deploy(self, region, version, ref=None):  # pragma: no cover - not used
        raise NotImplementedError


class FakeProber:
    def __init__(self, healthy):
        self.healthy = iter(healthy)

    def probe(self, region, base_url):
        ok = next(self.healthy)
        return AppProbe(
            region=region,
            url=base_url,
            reachable=True,
            status_code=200,
            status="ok" if ok else "degraded",
            version="2",
            latency_ms=3,
        )


def test_health_wait_needs_consecutive_healthy_probes_on_the_new_version():
    clock = iter(range(100)).__next__
    target = FakeTarget(["1", "2", "2", "2", "2"])
    prober = FakeProber([True, True, False, True, True])
    gate = wait_healthy(
        target,
        prober,
        "eu",
        "http://x",
        "2",
        wave=1,
        needed=2,
        interval=1,
        timeout=50,
        clock=clock,
        sleep=lambda s: None,
    )
    assert gate.passed and gate.requests == 5 and gate.errors == 2


def test_health_wait_has_a_deadline_and_says_what_it_last_saw():
    clock = iter(range(100)).__next__
    with pytest.raises(DeadlineExceeded, match="eu runs version 1"):
        wait_healthy(
            FakeTarget(["1"] * 10),
            FakeProber([True] * 10),
            "eu",
            "http://x",
            "2",
            wave=1,
            needed=2,
            interval=1,
            timeout=3,
            clock=clock,
            sleep=lambda s: None,
        )


def test_drain_decisions():
    ok = decide_drain("eu", ["eu", "us", "apac"], {}, {"eu": 10, "us": 5, "apac": 5}, {"us": 100, "apac": 100})
    assert ok.allowed and ok.load_rps == 20
    sick = decide_drain("eu", ["eu", "us", "apac"], {"apac": "app apac is unreachable"}, {}, {})
    assert not sick.allowed and "apac is unhealthy (app apac is unreachable)" in sick.reason
    full = decide_drain("eu", ["eu", "us"], {}, {"eu": 90, "us": 10}, {"us": 100})
    assert not full.allowed and "exceeds 80%" in full.reason
    assert not decide_drain("eu", ["us"], {}, {}, {}).allowed  # already drained
    assert not decide_drain("eu", ["eu"], {}, {}, {}, force=True).allowed  # the last region
    assert decide_drain("eu", ["eu", "us"], {"us": "x"}, {}, {}, force=True).allowed


def test_templates_quote_values_and_image_tags_are_versions():
    assert render("deploy {version} {region}", version="1; rm -rf /", region="eu") == "deploy '1; rm -rf /' eu"
    with pytest.raises(ConfigurationError, match="unknown placeholder"):
        render("deploy {nope}", version="1")
    assert image_version("registry:5000/team/app:1.2.3") == "1.2.3"
    assert image_version("app@sha256:abc") is None and image_version("app") is None
