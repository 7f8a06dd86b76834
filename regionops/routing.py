"""The application's geographic routing: one latency record per region, each health-checked.

Desired state comes from the topology (``application.traffic``): for each region a
latency-routed record set named ``traffic.record`` pointing at the region's app (an A
record for an IP, a CNAME for a host name), with a Route53 health check on the app's
health path.  A drained region's record set is removed and a TXT marker
(``_regionops-drained.<region>.<record>``) says why; restoring writes the record set
from the topology again and removes the marker, so the zone ends as it was.  Markers
live in Route53 itself, where every worker and every run sees them, and
:func:`ensure_app_traffic` (the lab's ``up``) leaves drained regions drained.
"""

from __future__ import annotations

import ipaddress
import logging
from datetime import UTC, datetime
from urllib.parse import urlparse

from pydantic import BaseModel

from regionops.decisions.traffic import decide_drain
from regionops.drivers.traffic import RecordSet, Route53Traffic, traffic_for
from regionops.errors import ConfigurationError, RunbookError
from regionops.topology import AppTraffic, Topology, fqdn

log = logging.getLogger(__name__)


def _settings(topology: Topology) -> AppTraffic:
    app = topology.app()
    if app.traffic is None:
        raise ConfigurationError(f"topology {topology.name}: application.traffic is not set (no app records)")
    return app.traffic


def marker_name(topology: Topology, region: str) -> str:
    """The TXT record that marks ``region`` drained."""
    return fqdn(f"_regionops-drained.{region}.{_settings(topology).record}")


def desired_record(topology: Topology, region: str, traffic: Route53Traffic) -> RecordSet:
    """The region's latency record set as the topology wants it (its health check ensured)."""
    settings = _settings(topology)
    url = topology.regions[region].app_url
    host = urlparse(url).hostname or ""
    try:
        ipaddress.ip_address(host)
        rtype, value = "A", host
    except ValueError:
        rtype, value = "CNAME", fqdn(host)
    check = traffic.ensure_health_check(url, settings.health_check_path, f"{topology.app().name}-{region}")
    return RecordSet(
        name=fqdn(settings.record),
        type=rtype,
        ttl=topology.traffic.record_ttl,
        values=[value],
        set_identifier=region,
        region=topology.regions[region].aws_region,
        health_check_id=check,
    )


class TrafficState(BaseModel):
    """Which regions receive the application's traffic now."""

    record: str
    serving: dict[str, RecordSet]
    drained: dict[str, str]

    def sentence(self) -> str:
        """One line for logs and reports."""
        drained = f"; drained: {', '.join(f'{r} ({why})' for r, why in self.drained.items())}" if self.drained else ""
        return f"{self.record} serves from {', '.join(sorted(self.serving)) or 'no region'}{drained}"


def read_state(topology: Topology, traffic: Route53Traffic | None = None) -> TrafficState:
    """The application's record sets and drain markers as Route53 has them."""
    traffic = traffic or traffic_for(topology)
    zone, record = topology.traffic.route53_zone, fqdn(_settings(topology).record)
    sets = traffic.list_record_sets(zone)
    serving = {r.set_identifier: r for r in sets if r.name == record and r.set_identifier in topology.regions}
    drained = {}
    for region in topology.regions:
        marker = next((r for r in sets if r.name == marker_name(topology, region) and r.type == "TXT"), None)
        if marker:
            drained[region] = " ".join(v.strip('"') for v in marker.values)
    return TrafficState(record=record, serving=serving, drained=drained)


def ensure_app_traffic(topology: Topology, traffic: Route53Traffic | None = None) -> TrafficState:
    """Every region that is not drained gets its record set as the topology wants it."""
    traffic = traffic or traffic_for(topology)
    state = read_state(topology, traffic)
    for region in topology.regions:
        if region in state.drained:
            continue
        want = desired_record(topology, region, traffic)
        if state.serving.get(region) != want:
            traffic.change_record_set(topology.traffic.route53_zone, "UPSERT", want)
    return read_state(topology, traffic)


class TrafficChange(BaseModel):
    """A drain or restore as done."""

    region: str
    action: str
    changed: bool
    reason: str

    def sentence(self) -> str:
        """One line for logs and reports."""
        return f"{self.action} {self.region}: {self.reason}"


def drain(topology: Topology, region: str, reason: str, traffic: Route53Traffic | None = None) -> TrafficChange:
    """Remove ``region``'s record set and mark it drained (no checks: callers decide first)."""
    traffic = traffic or traffic_for(topology)
    zone = topology.traffic.route53_zone
    state = read_state(topology, traffic)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = f"drained {stamp}: {reason}".replace('"', "'")[:250]
    traffic.change_record_set(
        zone,
        "UPSERT",
        RecordSet(
            name=marker_name(topology, region), type="TXT", ttl=topology.traffic.record_ttl, values=[f'"{text}"']
        ),
    )
    current = state.serving.get(region)
    if current is not None:
        traffic.change_record_set(zone, "DELETE", current)
    return TrafficChange(
        region=region,
        action="drain",
        changed=current is not None,
        reason=f"record set removed from {state.record}; {text}",
    )


def restore(topology: Topology, region: str, traffic: Route53Traffic | None = None) -> TrafficChange:
    """Write ``region``'s record set from the topology again and remove its drain marker."""
    traffic = traffic or traffic_for(topology)
    zone = topology.traffic.route53_zone
    state = read_state(topology, traffic)
    want = desired_record(topology, region, traffic)
    changed = state.serving.get(region) != want
    if changed:
        traffic.change_record_set(zone, "UPSERT", want)
    marker = next((r for r in traffic.list_record_sets(zone, marker_name(topology, region)) if r.type == "TXT"), None)
    if marker is not None:
        traffic.change_record_set(zone, "DELETE", marker)
    return TrafficChange(
        region=region,
        action="restore",
        changed=changed or marker is not None,
        reason=f"{want.sentence()}" + ("" if marker else " (was not marked drained)"),
    )


def drain_for_lost_database(topology: Topology, region: str, reason: str) -> TrafficChange | None:
    """Drain the app traffic of ``region`` whose database is lost, when the topology asks for it.

    For the failover and the DR drill.  Returns None when the topology does not ask
    (``application.traffic.drain_on_database_loss`` is off, the default).  Never raises:
    moving traffic is secondary to the recovery that calls it, so trouble is reported
    in the returned sentence instead.
    """
    app = topology.application
    if app is None or app.traffic is None or not app.traffic.drain_on_database_loss:
        return None
    try:
        traffic = traffic_for(topology)
        state = read_state(topology, traffic)
        decision = decide_drain(region, sorted(state.serving), {}, {}, {}, force=True)
        if not decision.allowed:
            return TrafficChange(region=region, action="drain", changed=False, reason=f"not drained: {decision.reason}")
        return drain(topology, region, reason, traffic)
    except RunbookError as exc:
        log.warning("could not drain %s: %s", region, exc)
        return TrafficChange(region=region, action="drain", changed=False, reason=f"drain failed: {exc}")
