"""Whether a region's application traffic may be drained, pure."""

from __future__ import annotations

from pydantic import BaseModel

# Drain only when the remaining regions stay below this share of their declared capacity.
CAPACITY_HEADROOM = 0.8


class DrainDecision(BaseModel):
    """The verdict on draining one region, with the numbers behind it."""

    region: str
    allowed: bool
    reason: str
    load_rps: float | None = None
    remaining_capacity_rps: float | None = None

    def sentence(self) -> str:
        """One line for logs and reports."""
        return f"drain {self.region}: {'allowed' if self.allowed else 'refused'}: {self.reason}"


def decide_drain(
    region: str,
    serving: list[str],
    unhealthy: dict[str, str],
    load_rps: dict[str, float | None],
    capacity_rps: dict[str, float],
    *,
    force: bool = False,
) -> DrainDecision:
    """May ``region`` stop receiving traffic?

    ``serving``: regions whose record is in place (``region`` included if it is).
    ``unhealthy``: region -> why, for regions whose app is not healthy.  ``load_rps``:
    measured request rate per serving region (None: unreadable).  ``capacity_rps``: what
    each region can serve (missing: not declared).  ``force`` (the database is lost)
    skips the health and capacity checks but never drains the last serving region.
    """
    if region not in serving:
        return DrainDecision(region=region, allowed=False, reason=f"{region} is not serving (already drained)")
    remaining = [r for r in serving if r != region]
    if not remaining:
        return DrainDecision(
            region=region, allowed=False, reason=f"{region} is the last region serving the application"
        )
    if force:
        return DrainDecision(
            region=region, allowed=True, reason=f"its database is lost; {', '.join(remaining)} keep serving"
        )
    sick = [f"{r} is unhealthy ({unhealthy[r]})" for r in remaining if r in unhealthy]
    if sick:
        return DrainDecision(
            region=region,
            allowed=False,
            reason="the regions that would take its traffic are not all healthy: " + "; ".join(sick),
        )
    unknown = [r for r in serving if load_rps.get(r) is None]
    if unknown:
        return DrainDecision(
            region=region,
            allowed=False,
            reason=f"the load of {', '.join(unknown)} cannot be measured, so no one can say the others can take it",
        )
    load = sum(load_rps[r] or 0.0 for r in serving)
    undeclared = [r for r in remaining if r not in capacity_rps]
    if undeclared:
        return DrainDecision(
            region=region,
            allowed=True,
            load_rps=load,
            reason=f"{', '.join(remaining)} are healthy; capacity of {', '.join(undeclared)} is not "
            f"declared, so the load ({load:.1f} req/s) was not checked against it",
        )
    capacity = sum(capacity_rps[r] for r in remaining)
    if load > capacity * CAPACITY_HEADROOM:
        return DrainDecision(
            region=region,
            allowed=False,
            load_rps=load,
            remaining_capacity_rps=capacity,
            reason=f"the load ({load:.1f} req/s) exceeds {CAPACITY_HEADROOM:.0%} of what "
            f"{', '.join(remaining)} can serve ({capacity:g} req/s)",
        )
    return DrainDecision(
        region=region,
        allowed=True,
        load_rps=load,
        remaining_capacity_rps=capacity,
        reason=f"{', '.join(remaining)} are healthy and can serve the load ({load:.1f} req/s of {capacity:g} req/s)",
    )
