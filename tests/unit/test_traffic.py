"""Route53Traffic against a real moto server over HTTP."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest
from moto.server import ThreadedMotoServer

from regionops.drivers.traffic import Route53Traffic, traffic_for
from regionops.errors import ExternalSystemError
from regionops.model.probes import DnsRecord
from regionops.topology import parse_topology


@pytest.fixture(scope="module")
def traffic() -> Iterator[Route53Traffic]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    topology = parse_topology(
        {
            "name": "unit",
            "regions": {
                "eu": {
                    "aws_region": "eu-west-1",
                    "residency": "eu",
                    "app_url": "http://eu",
                    "bucket": "unit-eu",
                    "work_pool": "eu",
                },
            },
            "clusters": {
                "core": {
                    "nodes": {"eu-1": {"region": "eu", "host": "127.0.0.1", "port": 5432, "data_dir": "/d"}},
                    "writer_record": "writer.core.db.example.com",
                }
            },
            "traffic": {"route53_zone": "db.example.com"},
            "aws": {"endpoint_url": f"http://127.0.0.1:{port}"},
        }
    )
    yield traffic_for(topology)
    server.stop()


@pytest.fixture
def zone(traffic: Route53Traffic) -> str:
    name = f"z{uuid.uuid4().hex[:8]}.example.com"
    traffic.ensure_zone(name)
    return name


def test_ensure_zone_is_idempotent_whatever_the_spelling(traffic: Route53Traffic) -> None:
    name = f"z{uuid.uuid4().hex[:8]}.example.com"
    first = traffic.ensure_zone(name)
    assert traffic.ensure_zone(name.upper() + ".") == first
    assert traffic.zone_id(name) == first
    assert not first.startswith("/hostedzone/")


def test_zone_id_of_a_missing_zone_names_it(traffic: Route53Traffic) -> None:
    with pytest.raises(ExternalSystemError, match=r"zone absent\.example\.com\. does not exist"):
        traffic.zone_id("absent.example.com")


def test_set_then_get_returns_the_new_value(traffic: Route53Traffic, zone: str) -> None:
    writer = f"Writer.Core.{zone}"
    assert traffic.get_record(zone, writer) is None

    first = traffic.set_record(zone, writer, f"eu-1.core.{zone}")
    moved = traffic.set_record(zone, writer, f"us-1.core.{zone}", ttl=10)

    expected = DnsRecord(name=f"writer.core.{zone}.", type="CNAME", ttl=10, values=[f"us-1.core.{zone}."])
    assert first.values == [f"eu-1.core.{zone}."]
    assert moved == expected
    assert traffic.get_record(zone, f"writer.core.{zone}.") == expected
    assert moved.sentence() == f"writer.core.{zone}. CNAME -> us-1.core.{zone}. (ttl 10)"


def test_get_record_distinguishes_types(traffic: Route53Traffic, zone: str) -> None:
    traffic.set_record(zone, f"app.{zone}", "192.0.2.10", type="A", ttl=60)
    assert traffic.get_record(zone, f"app.{zone}", type="CNAME") is None
    assert traffic.get_record(zone, f"app.{zone}", type="A").values == ["192.0.2.10"]
