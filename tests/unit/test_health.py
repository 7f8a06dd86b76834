"""assess_health is pure: observed state in, named problems out."""

from __future__ import annotations

from datetime import UTC, datetime

from regionops.health import assess_health, fenced_but_writable
from regionops.lsn import Lsn
from regionops.model import NodeState, WalReceiver
from regionops.model.probes import AppProbe, BucketStatus, DnsRecord
from regionops.topology import parse_topology

NOW = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
TOPO = parse_topology(
    {
        "name": "t",
        "regions": {
            r: {"aws_region": a, "residency": r, "app_url": f"http://{r}", "bucket": f"b-{r}", "work_pool": r}
            for r, a in {"eu": "eu-west-1", "us": "us-east-1"}.items()
        },
        "clusters": {
            "core": {
                "nodes": {
                    "eu-1": {"region": "eu", "host": "h1", "port": 1, "data_dir": "/d"},
                    "us-1": {"region": "us", "host": "h2", "port": 1, "data_dir": "/d"},
                },
                "writer_record": "writer.core.z.",
                "health": {"max_lag_bytes": 1000, "max_lag_seconds": 10},
            }
        },
        "traffic": {"route53_zone": "z."},
    }
)


def primary(name="eu-1", lsn="0/5000000", tl=1) -> NodeState:
    return NodeState(
        node=name, reachable=True, role="primary", timeline=tl, current_lsn=Lsn.parse(lsn), observed_at=NOW
    )


def replica(name="us-1", lsn="0/5000000", tl=1, status="streaming", lag_s=0.0) -> NodeState:
    return NodeState(
        node=name,
        reachable=True,
        role="replica",
        timeline=tl,
        replay_lsn=Lsn.parse(lsn),
        receive_lsn=Lsn.parse(lsn),
        replay_lag_seconds=lag_s,
        wal_receiver=WalReceiver(status=status) if status else None,
        observed_at=NOW,
    )


APPS = [
    AppProbe(
        region=r, url=f"http://{r}/health", reachable=True, status_code=200, status="ok", version="1", database="ok"
    )
    for r in ("eu", "us")
]
BUCKETS = [
    BucketStatus(bucket="b-eu", reachable=True, region="eu-west-1"),
    BucketStatus(bucket="b-us", reachable=True, region="us-east-1"),
]
WRITER = DnsRecord(name="writer.core.z.", type="CNAME", ttl=5, values=["eu-1.core.z."])


def assess(states, apps=APPS, buckets=BUCKETS, writer=WRITER, **kw):
    return assess_health(TOPO, "core", {s.node: s for s in states}, apps, buckets, writer, now=NOW, **kw)


def kinds(report):
    return sorted(p.kind for p in report.problems)


def test_healthy():
    report = assess([primary(), replica()])
    assert report.healthy and report.primary == "eu-1"
    assert report.sentence().startswith("cluster core is healthy: eu-1 is primary")


def test_two_primaries_is_split_brain_and_writer_check_is_skipped():
    report = assess([primary(), primary("us-1")])
    assert kinds(report) == ["multiple_primaries"]
    assert "eu-1, us-1" in report.problems[0].message and "split brain" in report.problems[0].message
    assert report.primary is None


def test_no_primary():
    down = NodeState(node="eu-1", reachable=False, error="connection refused", observed_at=NOW)
    report = assess([down, replica(status=None)])
    assert kinds(report) == ["no_primary", "node_unreachable", "replica_not_streaming"]


def test_lag_in_bytes_and_in_seconds():
    assert kinds(assess([primary(lsn="0/5000800"), replica(lsn="0/5000000")])) == ["replica_lagging"]
    assert kinds(assess([primary(), replica(lag_s=11)])) == ["replica_lagging"]
    assert assess([primary(lsn="0/5000100"), replica()]).healthy  # 256 bytes: under the limit


def test_thresholds_can_be_overridden():
    from regionops.topology import HealthThresholds

    report = assess([primary(lsn="0/5000800"), replica()], limits=HealthThresholds(max_lag_bytes=4096))
    assert report.healthy


def test_wrong_timeline():
    report = assess([primary(tl=2), replica(tl=1)])
    assert kinds(report) == ["replica_wrong_timeline"]
    assert "timeline 1, the primary on 2" in report.problems[0].message


def test_bucket_in_wrong_region_and_unreachable():
    buckets = [
        BucketStatus(bucket="b-eu", reachable=True, region="us-west-2"),
        BucketStatus(bucket="b-us", reachable=False, error="AccessDenied"),
    ]
    report = assess([primary(), replica()], buckets=buckets)
    assert kinds(report) == ["bucket_unreachable", "bucket_wrong_region"]


def test_writer_missing_unreadable_or_elsewhere():
    assert kinds(assess([primary(), replica()], writer=None)) == ["writer_record_missing"]
    report = assess([primary(), replica()], writer=None, writer_error="Route53 timed out")
    assert "cannot be read: Route53 timed out" in report.problems[0].message
    stray = DnsRecord(name="writer.core.z.", type="CNAME", ttl=5, values=["old-db.example.com."])
    report = assess([primary(), replica()], writer=stray)
    assert "old-db.example.com., which is no node of core" in report.problems[0].message


def test_app_down_and_degraded():
    apps = [
        AppProbe(region="eu", url="u", reachable=False, error="ConnectError"),
        AppProbe(region="us", url="u", reachable=True, status_code=200, status="degraded", database="unreachable"),
    ]
    assert kinds(assess([primary(), replica()], apps=apps)) == ["app_degraded", "app_down"]


def test_slots_retaining_too_much_wal_lost_slots_and_an_uncapped_primary():
    from regionops.model import Slot

    gib = 1024**3
    p = primary().model_copy(
        update={
            "max_slot_wal_keep_size_mb": -1,
            "slots": [
                Slot(slot_name="us_1", active=True, retained_bytes=1024),
                Slot(slot_name="gone_1", active=False, retained_bytes=2 * gib),
                Slot(slot_name="apac_1", active=False, wal_status="lost"),
            ],
        }
    )
    report = assess([p, replica()])
    assert kinds(report) == ["slot_keep_unlimited", "slot_lost", "slot_retaining_wal"]
    by_kind = {x.kind: x.message for x in report.problems}
    assert "slot gone_1 on eu-1 retains 2147483648 bytes (2048.0 MiB)" in by_kind["slot_retaining_wal"]
    assert "inactive" in by_kind["slot_retaining_wal"]
    assert "apac_1 on eu-1 is lost" in by_kind["slot_lost"]
    capped = p.model_copy(update={"max_slot_wal_keep_size_mb": 2048, "slots": p.slots[:1]})
    assert assess([capped, replica()]).healthy


def test_a_fenced_node_that_takes_writes_is_a_split_brain_and_not_the_primary():
    # us-1 was promoted; eu-1, fenced by that failover, came back still a writable primary.
    writer = DnsRecord(name="writer.core.z.", type="CNAME", ttl=5, values=["us-1.core.z."])
    report = assess([primary("eu-1"), primary("us-1", tl=2)], writer=writer, fenced={"eu-1"})
    assert kinds(report) == ["split_brain"]
    assert report.primary == "us-1"
    message = report.problems[0].message
    assert message.startswith("SPLIT BRAIN: eu-1 is fenced but accepts writes") and "while us-1" in message
    assert [row.fenced for row in report.nodes] == [True, False]


def test_a_fenced_node_made_read_only_is_no_split_brain():
    writer = DnsRecord(name="writer.core.z.", type="CNAME", ttl=5, values=["us-1.core.z."])
    read_only = primary("eu-1").model_copy(update={"read_only": True})
    assert fenced_but_writable({"eu-1": read_only}, {"eu-1"}) == []
    report = assess([read_only, primary("us-1", tl=2)], writer=writer, fenced={"eu-1"})
    assert "split_brain" not in kinds(report) and report.primary == "us-1"
    # Not fenced, the same two writable primaries are the plain two-primaries problem.
    assert kinds(assess([primary("eu-1"), primary("us-1", tl=2)], writer=writer)) == ["multiple_primaries"]


def test_each_replicas_lag_is_reported_in_ms_as_well():
    report = assess([primary(), replica(lag_s=0.0425)])
    row = next(r for r in report.nodes if r.node == "us-1")
    assert row.lag_ms == 42 and row.lag_seconds == 0.0
    assert next(r for r in report.nodes if r.node == "eu-1").lag_ms is None  # the primary has no lag
