"""What runbooks tell the monitoring system: planned-work silences and published results.

Both are best effort by design.  Monitoring that is down must not stop a switchover a
human decided on (the report says the alerts were not silenced), nor fail a backup
that succeeded (the report says its result was not published).  The gauges a runbook
publishes are in :mod:`regionops.runbook.monitoring`.
"""

from __future__ import annotations

import logging
from types import TracebackType

from prefect.runtime import flow_run as current_run

from regionops.drivers.pushgateway import Gauge
from regionops.monitoring.silences import PlannedSilence
from regionops.runbook.reporting import RunReporter
from regionops.topology import Topology
from tasks.monitoring import lift_silence, publish_metrics, silence_alerts

log = logging.getLogger(__name__)


class PlannedWorkSilence:
    """Silences a cluster's HA alerts from :meth:`begin` (just before the first change) to the block's end.

    ``with PlannedWorkSilence(...) as quiet: ... quiet.begin() ...``; on leaving the
    block the silence is lifted once the alerts the work caused have resolved.  No
    Alertmanager in the topology: nothing to do.  Never raises.
    """

    def __init__(self, topology: Topology, cluster: str, runbook: str, reporter: RunReporter, duration_seconds: float):
        self.topology = topology
        self.cluster = cluster
        self.runbook = runbook
        self.reporter = reporter
        self.duration_seconds = duration_seconds
        self.planned: PlannedSilence | None = None

    def begin(self) -> None:
        """Create the silence (once)."""
        if self.planned is not None or not self.topology.monitoring.alertmanager_url:
            return
        try:
            self.planned = silence_alerts(
                self.topology, self.cluster, self.runbook, str(current_run.get_id() or ""), self.duration_seconds
            )
            self.reporter.step(self.planned.sentence())
        except Exception as exc:  # noqa: BLE001 - never stop the work for monitoring
            self.reporter.step(
                f"could not silence the alerts of {self.cluster} ({exc}): the work will page and "
                "may start alert-driven runbooks"
            )

    def __enter__(self) -> PlannedWorkSilence:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.planned is None:
            return
        scrape = self.topology.monitoring.scrape_interval_seconds
        # Two scrapes and an evaluation: Prometheus has seen the end state before we look.
        settle = 3 * scrape
        try:
            lifted = lift_silence(self.topology, self.planned, settle, settle + max(30.0, 8 * scrape))
            self.reporter.step(lifted.sentence(), slack=bool(lifted.still_firing))
        except Exception as error:  # noqa: BLE001 - the silence expires by itself
            self.reporter.step(
                f"could not lift silence {self.planned.silence.id} ({error}); it expires at "
                f"{self.planned.silence.ends_at:%H:%M:%S} UTC"
            )


def publish(topology: Topology, job: str, cluster: str, gauges: list[Gauge], reporter: RunReporter) -> None:
    """Push ``gauges`` when the topology names a Pushgateway; a failure is reported, never raised."""
    if not topology.monitoring.pushgateway_url:
        return
    try:
        reporter.step(publish_metrics(topology, job, cluster, gauges).sentence(), slack=False)
    except Exception as exc:  # noqa: BLE001 - the runbook's own outcome stands
        log.warning("could not publish %s metrics of %s: %s", job, cluster, exc)
        reporter.step(f"could not publish the result to the Pushgateway ({exc}); alerts on it may fire", slack=False)
