"""The lab is a real three-region environment: replication, buckets, DNS, UI, clean shutdown."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from regionops.drivers.objectstore import objectstore_for
from regionops.drivers.traffic import traffic_for
from regionops.waiting import poll_until
from tests import labtools

pytestmark = pytest.mark.lab


def test_replicas_stream_from_the_primary(lab):
    rows = labtools.sql(lab, "eu-1").query("SELECT application_name, state FROM pg_stat_replication")
    assert {(r["application_name"], r["state"]) for r in rows} == {("us-1", "streaming"), ("apac-1", "streaming")}


def test_a_row_written_on_the_primary_is_on_both_replicas_within_a_second(lab):
    row = labtools.sql(lab, "eu-1").query(
        "INSERT INTO app_events (region, payload) VALUES ('eu', 'scenario') RETURNING id"
    )[0]
    for node in ("us-1", "apac-1"):
        replica = labtools.sql(lab, node)
        poll_until(
            lambda r=replica: r.query("SELECT 1 FROM app_events WHERE id = %s", (row["id"],)),
            timeout=1.0,
            interval=0.02,
            what=f"row {row['id']} on {node}",
        )


def test_each_bucket_reports_its_region_and_the_writer_points_at_the_primary(topology):
    store = objectstore_for(topology)
    for region in topology.regions.values():
        status = store.bucket_status(region.bucket)
        assert status.reachable and status.region == region.aws_region
    record = traffic_for(topology).get_record(topology.traffic.route53_zone, topology.writer_record("core"))
    assert topology.node_for_dns_name("core", record.values[0]) == "eu-1"


def test_app_metrics_count_requests_and_name_the_version(lab):
    base = f"http://127.0.0.1:{lab.cfg.ports.apps['eu']}"
    for _ in range(3):
        urllib.request.urlopen(f"{base}/health", timeout=5).close()
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"{base}/no-such-page", timeout=5)
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples.get((name, frozenset(labels.items())), 0.0)

    assert value("regionops_app_requests_total", region="eu", method="GET", endpoint="/health", code="200") >= 3
    assert value("regionops_app_requests_total", region="eu", method="GET", endpoint="other", code="404") >= 1
    assert value("regionops_app_request_duration_seconds_count", region="eu", endpoint="/health") >= 3
    assert value("regionops_app_version_info", region="eu", version=lab.cfg.app_version) == 1


def test_app_writes_through_the_writer_and_reads_locally(lab):
    ports = lab.cfg.ports.apps
    req = urllib.request.Request(
        f"http://127.0.0.1:{ports['us']}/write",
        data=b'{"payload": "via app"}',
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        written = json.load(resp)
    assert resp.status == 201 and written["node"] == "eu-1"

    def read_in_apac():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports['apac']}/read?id={written['id']}", timeout=2) as r:
                return json.load(r)
        except OSError:
            return None

    row = poll_until(read_in_apac, timeout=2, what="row readable through the apac app")
    assert row["payload"] == "via app" and row["node"] == "apac-1"


def test_prefect_ui_answers(lab):
    with urllib.request.urlopen(f"http://127.0.0.1:{lab.cfg.ports.prefect}/", timeout=10) as resp:
        assert resp.status == 200 and b"<html" in resp.read(2000).lower()


def test_up_again_is_idempotent(lab):
    pids = {p.name: p.read_text() for p in (lab.cfg.lab_dir / "run").glob("*.pid")}
    status = lab.up(progress=lambda m: None)
    assert status.healthy
    assert {p.name: p.read_text() for p in (lab.cfg.lab_dir / "run").glob("*.pid")} == pids
