"""Silencing the alerts planned work causes, and lifting the silence once they have resolved.

A switchover stops the primary for a few seconds: without a silence, Prometheus fires
PostgresPrimaryDown and Alertmanager would start a failover of a healthy cluster.  The
silence matches the cluster's HA alerts only (never backup, app or other clusters'
alerts).  It is lifted when Alertmanager no longer holds any matching alert that was
not already there before the work began, after Prometheus has had time to see the end
state; if that does not happen in time it is lifted anyway, so a real problem left
behind by the work pages as it should.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pydantic import BaseModel

from regionops.drivers.alertmanager import AlertmanagerClient, Matcher, Silence
from regionops.errors import DeadlineExceeded
from regionops.topology import Topology
from regionops.waiting import poll_until

# The alerts a planned primary move causes by design (never the backup or app alerts).
PLANNED_WORK_ALERTS = ("PostgresPrimaryDown", "PostgresReplicationBroken", "PostgresReplicaLagging", "PostgresNodeDown")


def planned_work_matchers(topology: Topology, cluster: str) -> list[Matcher]:
    """Matchers for the HA alerts of one cluster of one environment (Prometheus' external label)."""
    return [
        Matcher(name="environment", value=topology.name),
        Matcher(name="cluster", value=cluster),
        Matcher(name="alertname", value="|".join(PLANNED_WORK_ALERTS), is_regex=True),
    ]


class PlannedSilence(BaseModel):
    """A silence for planned work, and the matching alerts that already fired before it."""

    silence: Silence
    already_firing: list[str] = []  # fingerprints

    def sentence(self) -> str:
        before = f"; {len(self.already_firing)} matching alert(s) were already firing" if self.already_firing else ""
        return f"{self.silence.sentence()} for the planned work{before}"


class SilenceLifted(BaseModel):
    """How lifting went."""

    silence_id: str
    waited_seconds: float
    still_firing: list[str] = []

    def sentence(self) -> str:
        if self.still_firing:
            return (
                f"lifted silence {self.silence_id} after {self.waited_seconds:.0f} s although "
                f"{len(self.still_firing)} alert(s) it covered still fire (they notify now): "
                + "; ".join(self.still_firing)
            )
        return (
            f"lifted silence {self.silence_id} after {self.waited_seconds:.0f} s: every alert the work "
            f"caused has resolved"
        )


def silence(
    am: AlertmanagerClient, topology: Topology, cluster: str, runbook: str, run: str, duration_seconds: float
) -> PlannedSilence:
    """Silence ``cluster``'s HA alerts for ``duration_seconds`` (it expires by itself if never lifted)."""
    matchers = planned_work_matchers(topology, cluster)
    before = [a.fingerprint for a in am.alerts(matchers)]
    created = am.create_silence(
        matchers,
        duration_seconds,
        created_by=f"regionops {runbook}",
        comment=f"planned {runbook} of cluster {cluster} (run {run})",
    )
    return PlannedSilence(silence=created, already_firing=before)


def lift(
    am: AlertmanagerClient,
    planned: PlannedSilence,
    settle_seconds: float,
    timeout_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> SilenceLifted:
    """Wait ``settle_seconds`` (Prometheus sees the end state), then until no new matching alert remains; expire.

    Alerts that fired before the silence are not waited for: they were not the work's.
    """
    started = clock()
    sleep(settle_seconds)
    matchers = planned.silence.matchers
    old = set(planned.already_firing)

    def new_alerts() -> list[str]:
        return [a.sentence() for a in am.alerts(matchers) if a.fingerprint not in old]

    remaining: list[str] = []
    try:
        poll_until(
            lambda: not new_alerts(),
            timeout=max(0.0, timeout_seconds - settle_seconds),
            interval=0.5,
            what="the alerts the planned work caused to resolve",
            sleep=sleep,
            clock=clock,
        )
    except DeadlineExceeded:
        remaining = new_alerts()
    am.expire_silence(planned.silence.id)
    return SilenceLifted(
        silence_id=planned.silence.id, waited_seconds=round(clock() - started, 1), still_firing=remaining
    )
