"""Alertmanager and Pushgateway drivers over httpx.MockTransport; the planned-work silence logic."""

from __future__ import annotations

import json

import httpx
import pytest

from regionops.drivers.alertmanager import AlertmanagerClient, Matcher
from regionops.drivers.pushgateway import Gauge, PushgatewayClient, exposition
from regionops.errors import ExternalSystemError, TransientError
from regionops.monitoring import silences
from regionops.topology import parse_topology
from tests.unit.test_topology import base


class FakeAlertmanager:
    """Just enough of API v2: silences and a list of alerts the test controls."""

    def __init__(self):
        self.silences: dict[str, dict] = {}
        self.alerts: list[dict] = []
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if request.method == "POST" and path == "/api/v2/silences":
            sid = f"s{len(self.silences) + 1}"
            self.silences[sid] = {**json.loads(request.content), "status": {"state": "active"}}
            return httpx.Response(200, json={"silenceID": sid})
        if request.method == "DELETE" and path.startswith("/api/v2/silence/"):
            sid = path.rsplit("/", 1)[1]
            if sid not in self.silences:
                return httpx.Response(404, text="silence not found")
            self.silences[sid]["status"]["state"] = "expired"
            return httpx.Response(200)
        if request.method == "GET" and path.startswith("/api/v2/silence/"):
            sid = path.rsplit("/", 1)[1]
            return httpx.Response(200, json=self.silences[sid]) if sid in self.silences else httpx.Response(404)
        if request.method == "GET" and path == "/api/v2/alerts":
            return httpx.Response(200, json=self.alerts)
        return httpx.Response(500, text="unexpected")


def am_client(fake: FakeAlertmanager) -> AlertmanagerClient:
    return AlertmanagerClient("http://am:9093/", client=httpx.Client(transport=httpx.MockTransport(fake)))


def alert(fp: str, name: str = "PostgresPrimaryDown") -> dict:
    return {
        "fingerprint": fp,
        "labels": {"alertname": name, "cluster": "core"},
        "status": {"state": "suppressed", "silencedBy": ["s1"]},
        "startsAt": "2024-05-01T03:00:00Z",
    }


def test_create_silence_sends_matchers_and_window():
    fake = FakeAlertmanager()
    s = am_client(fake).create_silence(
        [Matcher(name="cluster", value="core"), Matcher(name="alertname", value="A|B", is_regex=True)], 600, "me", "why"
    )
    body = fake.silences[s.id]
    assert body["matchers"] == [
        {"name": "cluster", "value": "core", "isRegex": False, "isEqual": True},
        {"name": "alertname", "value": "A|B", "isRegex": True, "isEqual": True},
    ]
    assert (s.ends_at - s.starts_at).total_seconds() == 600
    assert 'alertname=~"A|B"' in s.sentence()


def test_errors_are_translated_at_the_boundary():
    def refuse(request):
        raise httpx.ConnectError("refused")

    client = AlertmanagerClient("http://am", client=httpx.Client(transport=httpx.MockTransport(refuse)))
    with pytest.raises(TransientError, match="did not answer"):
        client.alerts([])
    bad = AlertmanagerClient(
        "http://am",
        client=httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(400, text="bad matcher"))),
    )
    with pytest.raises(ExternalSystemError, match="400: bad matcher"):
        bad.alerts([])


def test_lift_waits_for_the_works_alerts_not_for_older_ones():
    fake = FakeAlertmanager()
    am = am_client(fake)
    topo = parse_topology(base())
    fake.alerts = [alert("old", "PostgresNodeDown")]
    planned = silences.silence(am, topo, "core", "switchover", "run-1", 600)
    assert planned.already_firing == ["old"]
    filters = fake.requests[0].url.params.get_list("filter")
    assert filters == [
        'environment="t"',
        'cluster="core"',
        'alertname=~"PostgresPrimaryDown|PostgresReplicationBroken|PostgresReplicaLagging|PostgresNodeDown"',
    ]
    fake.alerts.append(alert("new"))
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds
        if now[0] >= 5:  # the work's alert resolves after 5 s
            fake.alerts = [a for a in fake.alerts if a["fingerprint"] != "new"]

    lifted = silences.lift(am, planned, settle_seconds=2, timeout_seconds=30, sleep=sleep, clock=lambda: now[0])
    assert lifted.still_firing == [] and lifted.waited_seconds == 5.0
    assert fake.silences[planned.silence.id]["status"]["state"] == "expired"
    assert "every alert the work caused has resolved" in lifted.sentence()


def test_lift_gives_up_at_the_deadline_and_says_what_still_fires():
    fake = FakeAlertmanager()
    am = am_client(fake)
    planned = silences.silence(am, parse_topology(base()), "core", "switchover", "run-1", 600)
    fake.alerts = [alert("stuck")]
    now = [0.0]
    lifted = silences.lift(am, planned, 1, 10, sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0])
    assert len(lifted.still_firing) == 1 and "PostgresPrimaryDown" in lifted.still_firing[0]
    assert fake.silences[planned.silence.id]["status"]["state"] == "expired"


def test_pushgateway_puts_the_group_in_text_format():
    seen: list[httpx.Request] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    client = PushgatewayClient("http://pg:9091", client=httpx.Client(transport=httpx.MockTransport(gateway)))
    pushed = client.push("regionops-backup", "core", [Gauge(name="a_seconds", help="h", value=1.5)])
    assert seen[0].method == "PUT"
    assert seen[0].url.path == "/metrics/job/regionops-backup/cluster/core"
    assert seen[0].content.decode() == "# HELP a_seconds h\n# TYPE a_seconds gauge\na_seconds 1.5\n"
    assert pushed.sentence() == (
        "published a_seconds=1.5 for cluster core (job regionops-backup) to "
        "http://pg:9091/metrics/job/regionops-backup/cluster/core"
    )
    with pytest.raises(ValueError, match="not a Prometheus metric name"):
        exposition([Gauge(name="bad-name", help="h", value=1)])


def test_prometheus_alerts_are_read_and_an_unreachable_prometheus_is_a_result():
    from regionops.drivers.prometheus import PrometheusClient

    body = {
        "status": "success",
        "data": {
            "alerts": [
                {
                    "labels": {"alertname": "BackupTooOld", "cluster": "core"},
                    "annotations": {"summary": "no backup"},
                    "state": "firing",
                },
                {"labels": {"alertname": "PostgresPrimaryDown", "cluster": "core", "node": "eu-1"}, "state": "pending"},
            ]
        },
    }
    ok = PrometheusClient(
        "http://prom", client=httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, json=body)))
    ).alerts()
    assert [a.alertname for a in ok.firing()] == ["BackupTooOld"]
    assert ok.sentence() == (
        "Prometheus at http://prom has 1 alert(s) firing: BackupTooOld (cluster=core) firing: no backup"
    )

    def refuse(request):
        raise httpx.ConnectError("refused")

    down = PrometheusClient("http://prom", client=httpx.Client(transport=httpx.MockTransport(refuse))).alerts()
    assert not down.reachable and "ConnectError" in down.sentence()


def test_prometheus_instant_query_returns_the_series_or_none_when_unreachable():
    from regionops.drivers.prometheus import PrometheusClient

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/query" and request.url.params["query"] == "up"
        return httpx.Response(200, json={"status": "success", "data": {"result": [{"metric": {}, "value": [0, "1"]}]}})

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    assert PrometheusClient("http://prom", client=httpx.Client(transport=httpx.MockTransport(answer))).vector("up") == [
        {"metric": {}, "value": [0, "1"]}
    ]
    assert (
        PrometheusClient("http://prom", client=httpx.Client(transport=httpx.MockTransport(refuse))).vector("up") is None
    )
