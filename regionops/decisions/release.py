"""Release decisions, pure: the wave plan and the health gate over two metric readings."""

from __future__ import annotations

import math

from regionops.errors import ConfigurationError
from regionops.model.release import GateMeasurement, GateThresholds, MetricsSample


def plan_waves(regions: list[str], canary: str, waves: list[list[str]] | None) -> list[list[str]]:
    """The waves of a release: ``waves`` as given, checked, or the canary alone then the rest.

    Every region must appear exactly once: a plan that skips one would leave it on the
    old version while the report says "released".  Errors name the parameter.
    """
    if not waves:
        return [[canary], [r for r in regions if r != canary]] if len(regions) > 1 else [[canary]]
    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, wave in enumerate(waves, start=1):
        if not wave:
            problems.append(f"wave {i} is empty")
        for region in wave:
            if region not in regions:
                problems.append(f"wave {i}: unknown region {region!r}")
            elif region in seen:
                problems.append(f"wave {i}: region {region!r} is already in wave {seen[region]}")
            else:
                seen[region] = i
    skipped = [r for r in regions if r not in seen]
    if skipped:
        problems.append(f"the plan skips region(s) {', '.join(skipped)}: every region must be in exactly one wave")
    if problems:
        raise ConfigurationError(
            f"parameter waves: {'; '.join(problems)} (the topology's regions: {', '.join(regions)})"
        )
    return [list(w) for w in waves]


def _delta(before: MetricsSample, after: MetricsSample) -> tuple[float, float, dict[float, float]]:
    """Counter increases between two readings; a drop means the process restarted (Prometheus' rule)."""
    if after.requests < before.requests:
        return after.requests, after.errors, dict(after.buckets)
    buckets = {le: count - before.buckets.get(le, 0) for le, count in after.buckets.items()}
    return after.requests - before.requests, after.errors - before.errors, buckets


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile of a cumulative histogram, interpolated inside its bucket (``histogram_quantile``)."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower_bound  # beyond the largest finite bucket: its bound is all we know
            if count == lower_count:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = le, count
    return bounds[-1]


def evaluate_gate(
    before: MetricsSample, after: MetricsSample, limits: GateThresholds, *, wave: int, check: str
) -> GateMeasurement:
    """Error rate and p95 latency between two readings of one region, against ``limits``."""
    region = after.region
    if not after.reachable:
        return GateMeasurement(
            region=region,
            wave=wave,
            check=check,
            requests=0,
            errors=0,
            error_rate=None,
            p95_ms=None,
            passed=False,
            reason=f"metrics unreadable: {after.error}",
        )
    requests, errors, buckets = _delta(before, after)
    rate = errors / requests if requests else None
    p95 = quantile(0.95, buckets)
    p95_ms = None if p95 is None else p95 * 1000
    failures = []
    if requests < limits.min_requests:
        failures.append(f"only {requests:g} request(s) measured, fewer than {limits.min_requests}")
    if rate is not None and rate > limits.max_error_rate:
        failures.append(f"error rate {rate:.1%} > {limits.max_error_rate:.1%}")
    if p95_ms is not None and p95_ms > limits.max_p95_ms:
        failures.append(f"p95 {p95_ms:.0f} ms > {limits.max_p95_ms:g} ms")
    measured = (
        f"{requests:g} requests, {errors:g} errors"
        + (f" ({rate:.1%})" if rate is not None else "")
        + (f", p95 {p95_ms:.0f} ms" if p95_ms is not None else "")
    )
    reason = measured + (
        "; " + "; ".join(failures)
        if failures
        else f" within limits (error rate <= {limits.max_error_rate:.1%}, p95 <= {limits.max_p95_ms:g} ms)"
    )
    return GateMeasurement(
        region=region,
        wave=wave,
        check=check,
        requests=requests,
        errors=errors,
        error_rate=rate,
        p95_ms=p95_ms,
        passed=not failures,
        reason=reason,
    )
