"""Health during a release: N healthy probes in a row on the new version, then the bake.

Both loops have deadlines and injectable clock/sleep; both return
:class:`GateMeasurement` rows for the report.  The bake keeps requesting the
application's probe paths (so the gate has traffic to judge even in a quiet region)
and re-evaluates the gate on the metrics after every interval: the first failing
evaluation stops the bake.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from regionops.decisions.release import evaluate_gate
from regionops.drivers.appmetrics import MetricsSource
from regionops.drivers.deploy import ReleaseTarget
from regionops.drivers.probes import AppProber, TrafficMaker
from regionops.errors import DeadlineExceeded
from regionops.model.release import GateMeasurement, GateThresholds


def wait_healthy(
    target: ReleaseTarget,
    prober: AppProber,
    region: str,
    base_url: str,
    version: str,
    *,
    wave: int,
    needed: int,
    interval: float,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> GateMeasurement:
    """Wait until ``region`` runs ``version`` and its health probe passes ``needed`` times in a row.

    Returns the passing measurement; raises DeadlineExceeded (with what was last seen)
    when ``timeout`` passes first.
    """
    deadline = clock() + timeout
    streak = probes = failures = 0
    last = "no probe yet"
    worst_ms = 0.0
    while True:
        running = target.current(region)
        probe = prober.probe(region, base_url)
        probes += 1
        if running.version == version and probe.healthy:
            streak += 1
            worst_ms = max(worst_ms, probe.latency_ms or 0.0)
        else:
            streak = 0
            failures += 1
            last = running.sentence() if running.version != version else probe.sentence()
        if streak >= needed:
            return GateMeasurement(
                region=region,
                wave=wave,
                check="health",
                requests=probes,
                errors=failures,
                error_rate=None,
                p95_ms=None,
                passed=True,
                reason=f"runs {version}, {needed} healthy probe(s) in a row after {probes} probe(s) "
                f"(slowest {worst_ms:.0f} ms)",
            )
        if clock() >= deadline:
            raise DeadlineExceeded(
                f"{region} did not run {version} with {needed} healthy probe(s) in a row within "
                f"{timeout:g} s ({probes} probe(s); last: {last})"
            )
        sleep(interval)


def bake(
    metrics: MetricsSource,
    traffic: TrafficMaker,
    region: str,
    base_url: str,
    probe_paths: list[str],
    limits: GateThresholds,
    *,
    wave: int,
    seconds: float,
    interval: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> GateMeasurement:
    """Watch ``region`` for ``seconds``: error rate and p95 since the bake began, checked every interval.

    Returns the final measurement, or the first failing one (the caller stops the release).
    """
    start = metrics.sample(region, base_url)
    end_at = clock() + seconds
    while True:
        for path in probe_paths:
            traffic.request(base_url, path)
        measured = evaluate_gate(start, metrics.sample(region, base_url), limits, wave=wave, check="bake")
        if not measured.passed or clock() >= end_at:
            return measured
        sleep(min(interval, max(end_at - clock(), 0.05)))
