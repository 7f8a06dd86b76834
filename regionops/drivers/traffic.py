"""Where clients are sent: Route53 records (the writer record points at the primary).

Every name is handled in Route53's own form (lower case, one trailing dot, see
:func:`regionops.topology.fqdn`) so a record read back compares equal to the one set.
Only simple-routing records are handled (no weighted/failover sets).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from regionops.drivers.aws import route53_client, translate_error
from regionops.errors import ExternalSystemError
from regionops.topology import Topology, fqdn

log = logging.getLogger(__name__)


class DnsRecord(BaseModel):
    """One record set.  ``ttl`` is None for alias records."""

    name: str
    type: str
    ttl: int | None
    values: list[str]

    def sentence(self) -> str:
        """One line for logs and reports."""
        return f"{self.name} {self.type} -> {', '.join(self.values)} (ttl {self.ttl})"


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


def traffic_for(topology: Topology) -> Route53Traffic:
    """The Route53 traffic driver of ``topology`` (endpoint and credentials from ``topology.aws``)."""
    return Route53Traffic(route53_client(topology))
