"""Where clients are sent: Route53 records (the writer record points at the primary).

Every name is handled in Route53's own form (lower case, one trailing dot, see
:func:`regionops.topology.fqdn`) so a record read back compares equal to the one set.
Simple records (the writer record) and the application's latency-routed record sets
(one per region, each with a Route53 health check on the region's app) are handled.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import uuid
from typing import Any, Protocol
from urllib.parse import urlparse

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from regionops.drivers.aws import route53_client, translate_error
from regionops.errors import ExternalSystemError
from regionops.model.probes import DnsRecord
from regionops.topology import Topology, fqdn

log = logging.getLogger(__name__)


class RecordSet(BaseModel):
    """One record set, routing included (latency records carry a set identifier, a region, a health check)."""

    name: str
    type: str
    ttl: int | None = None
    values: list[str] = []
    set_identifier: str | None = None
    region: str | None = None
    health_check_id: str | None = None

    def sentence(self) -> str:
        """One line for logs and reports."""
        routing = f" [{self.set_identifier}, latency {self.region}]" if self.set_identifier else ""
        check = f", health check {self.health_check_id}" if self.health_check_id else ""
        return f"{self.name} {self.type}{routing} -> {', '.join(self.values)} (ttl {self.ttl}{check})"

    def to_aws(self) -> dict[str, Any]:
        """The ResourceRecordSet for a change batch."""
        rrset: dict[str, Any] = {
            "Name": self.name,
            "Type": self.type,
            "TTL": self.ttl,
            "ResourceRecords": [{"Value": v} for v in self.values],
        }
        if self.set_identifier:
            rrset["SetIdentifier"] = self.set_identifier
        if self.region:
            rrset["Region"] = self.region
        if self.health_check_id:
            rrset["HealthCheckId"] = self.health_check_id
        return rrset

    @classmethod
    def from_aws(cls, rrset: dict[str, Any]) -> RecordSet:
        """A record set as Route53 lists it."""
        return cls(
            name=fqdn(rrset["Name"]),
            type=rrset["Type"],
            ttl=rrset.get("TTL"),
            values=[r["Value"] for r in rrset.get("ResourceRecords", [])],
            set_identifier=rrset.get("SetIdentifier"),
            region=rrset.get("Region"),
            health_check_id=rrset.get("HealthCheckId"),
        )


class TrafficDriver(Protocol):
    """DNS operations the runbooks need.  Tests may inject another."""

    def ensure_zone(self, zone_name: str) -> str: ...
    def zone_id(self, zone_name: str) -> str: ...
    def get_record(self, zone_name: str, name: str, type: str = "CNAME") -> DnsRecord | None: ...
    def set_record(self, zone_name: str, name: str, value: str, type: str = "CNAME", ttl: int = 30) -> DnsRecord: ...


def _normalise_value(value: str, type: str) -> str:
    # CNAME targets are names too; other types (A, TXT, ...) are stored as given.
    return fqdn(value) if type == "CNAME" else value


class Route53Traffic:
    """TrafficDriver over a boto3 Route53 client."""

    def __init__(self, client: Any):
        self._client = client

    def _find_zone(self, zone_name: str) -> str | None:
        name = fqdn(zone_name)
        try:
            # Zones come sorted by name starting at DNSName, so matches are on the first page.
            zones = self._client.list_hosted_zones_by_name(DNSName=name).get("HostedZones", [])
        except (ClientError, BotoCoreError) as exc:
            raise translate_error(exc, f"zone {name}") from exc
        ids = [z["Id"].rsplit("/", 1)[-1] for z in zones if fqdn(z["Name"]) == name]
        if len(ids) > 1:
            raise ExternalSystemError(f"zone {name} is ambiguous: hosted zones {', '.join(ids)} share its name")
        return ids[0] if ids else None

    def zone_id(self, zone_name: str) -> str:
        """The id of hosted zone ``zone_name`` (without the /hostedzone/ prefix)."""
        found = self._find_zone(zone_name)
        if found is None:
            raise ExternalSystemError(f"zone {fqdn(zone_name)} does not exist in Route53")
        return found

    def ensure_zone(self, zone_name: str) -> str:
        """The id of hosted zone ``zone_name``, creating the zone when it does not exist."""
        found = self._find_zone(zone_name)
        if found is not None:
            return found
        name = fqdn(zone_name)
        try:
            reply = self._client.create_hosted_zone(Name=name, CallerReference=f"regionops-{uuid.uuid4()}")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "HostedZoneAlreadyExists":
                return self.zone_id(name)  # created concurrently
            raise translate_error(exc, f"zone {name}") from exc
        except BotoCoreError as exc:
            raise translate_error(exc, f"zone {name}") from exc
        zone_id = reply["HostedZone"]["Id"].rsplit("/", 1)[-1]
        log.info("created hosted zone %s (%s)", name, zone_id)
        return zone_id

    def get_record(self, zone_name: str, name: str, type: str = "CNAME") -> DnsRecord | None:
        """The ``type`` record set named ``name`` in the zone, or None when there is none."""
        zone_id = self.zone_id(zone_name)
        name = fqdn(name)
        try:
            reply = self._client.list_resource_record_sets(
                HostedZoneId=zone_id, StartRecordName=name, StartRecordType=type, MaxItems="1"
            )
        except (ClientError, BotoCoreError) as exc:
            raise translate_error(exc, f"record {name} {type} in zone {fqdn(zone_name)}") from exc
        for rrset in reply.get("ResourceRecordSets", []):
            if fqdn(rrset["Name"]) == name and rrset["Type"] == type:
                if "AliasTarget" in rrset:
                    values = [fqdn(rrset["AliasTarget"]["DNSName"])]
                else:
                    values = [r["Value"] for r in rrset.get("ResourceRecords", [])]
                return DnsRecord(name=name, type=type, ttl=rrset.get("TTL"), values=values)
        return None

    def set_record(self, zone_name: str, name: str, value: str, type: str = "CNAME", ttl: int = 30) -> DnsRecord:
        """Create or replace (UPSERT) the ``type`` record ``name`` -> ``value``; returns it as read back."""
        zone_id = self.zone_id(zone_name)
        name = fqdn(name)
        change = {
            "Action": "UPSERT",
            "ResourceRecordSet": {
                "Name": name,
                "Type": type,
                "TTL": ttl,
                "ResourceRecords": [{"Value": _normalise_value(value, type)}],
            },
        }
        try:
            reply = self._client.change_resource_record_sets(
                HostedZoneId=zone_id,
                ChangeBatch={"Comment": "regionops", "Changes": [change]},
            )
        except (ClientError, BotoCoreError) as exc:
            raise translate_error(exc, f"record {name} {type} in zone {fqdn(zone_name)}") from exc
        log.info("set %s %s -> %s (change %s)", name, type, value, reply.get("ChangeInfo", {}).get("Id"))
        record = self.get_record(zone_name, name, type)
        if record is None:
            raise ExternalSystemError(f"record {name} {type} in zone {fqdn(zone_name)} is missing right after UPSERT")
        return record

    # -- record sets with routing (the application's latency records) -----------------

    def list_record_sets(self, zone_name: str, name: str | None = None) -> list[RecordSet]:
        """Every record set in the zone (only those named ``name`` when given)."""
        zone_id = self.zone_id(zone_name)
        found: list[RecordSet] = []
        try:
            for page in self._client.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone_id):
                found += [RecordSet.from_aws(r) for r in page.get("ResourceRecordSets", [])]
        except (ClientError, BotoCoreError) as exc:
            raise translate_error(exc, f"records of zone {fqdn(zone_name)}") from exc
        return [r for r in found if name is None or r.name == fqdn(name)]

    def change_record_set(self, zone_name: str, action: str, record: RecordSet) -> None:
        """UPSERT or DELETE one record set (DELETE needs it exactly as it is)."""
        zone_id = self.zone_id(zone_name)
        try:
            self._client.change_resource_record_sets(
                HostedZoneId=zone_id,
                ChangeBatch={
                    "Comment": "regionops",
                    "Changes": [{"Action": action, "ResourceRecordSet": record.to_aws()}],
                },
            )
        except (ClientError, BotoCoreError) as exc:
            raise translate_error(exc, f"{action} {record.sentence()}") from exc
        log.info("%s %s", action, record.sentence())

    def ensure_health_check(self, url: str, path: str, label: str) -> str:
        """The id of an HTTP(S) health check on ``url`` + ``path``, created once (found again by reference).

        The caller reference is derived from the configuration, so the same check is found
        on every call and a changed URL or path gets a new check.
        """
        parsed = urlparse(url)
        https = parsed.scheme == "https"
        config: dict[str, Any] = {
            "Type": "HTTPS" if https else "HTTP",
            "Port": parsed.port or (443 if https else 80),
            "ResourcePath": path,
            "RequestInterval": 30,
            "FailureThreshold": 3,
        }
        host = parsed.hostname or ""
        try:
            ipaddress.ip_address(host)
            config["IPAddress"] = host
        except ValueError:
            config["FullyQualifiedDomainName"] = host
        digest = hashlib.sha1(repr(sorted(config.items())).encode()).hexdigest()[:12]
        reference = f"regionops-{label}-{digest}"
        try:
            for page in self._client.get_paginator("list_health_checks").paginate():
                for check in page.get("HealthChecks", []):
                    if check.get("CallerReference") == reference:
                        return check["Id"]
            reply = self._client.create_health_check(CallerReference=reference, HealthCheckConfig=config)
        except (ClientError, BotoCoreError) as exc:
            raise translate_error(exc, f"health check {label}") from exc
        log.info("created health check %s on %s%s", reply["HealthCheck"]["Id"], url, path)
        return reply["HealthCheck"]["Id"]


def traffic_for(topology: Topology) -> Route53Traffic:
    """The Route53 traffic driver of ``topology`` (endpoint and credentials from ``topology.aws``)."""
    return Route53Traffic(route53_client(topology))
