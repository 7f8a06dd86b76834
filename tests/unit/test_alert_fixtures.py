"""The receiver against Alertmanager's own payloads, captured from the real binary
(tests/fixtures/alertmanager/capture.py): good ones start the right runbook, bad ones
(wrong token, malformed JSON, an unknown cluster) get a named 4xx and start nothing.
The captured Slack message lands in the lab's Slack sink.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from regionops.alerting.ledger import AlertLedger
from regionops.alerting.receiver import ALERTS_PATH, create_app
from regionops.lab.config import LabConfig, LabPorts
from regionops.lab.lab import topology_document
from regionops.lab.slack_sink import SlackSink
from regionops.topology import parse_topology
from tests.unit.test_alert_receiver import FakeEmitter

FIXTURES = Path(__file__).parents[1] / "fixtures" / "alertmanager"
TOKEN = "fixture-token"


def captured(name: str) -> dict:
    doc = json.loads((FIXTURES / name).read_text())
    assert doc["captured_from"].startswith("alertmanager, version"), doc["captured_from"]
    return doc


@pytest.fixture
def emitter() -> FakeEmitter:
    return FakeEmitter()


@pytest.fixture
def client(emitter: FakeEmitter, tmp_path: Path) -> TestClient:
    cfg = LabConfig(lab_dir=tmp_path, ports=LabPorts.from_base(20000))
    topology = parse_topology(topology_document(cfg))
    return TestClient(create_app(emitter, TOKEN, AlertLedger(tmp_path / "ledger.json"), topology))


def post(client: TestClient, body: bytes | dict, token: str | None = TOKEN, scheme: str = "Bearer"):
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"{scheme} {token}"
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(ALERTS_PATH, content=content, headers=headers)


def test_alertmanager_sends_a_bearer_token():
    assert captured("firing-primary-down.json")["authorization_scheme"] == "Bearer"


def test_the_primary_down_storm_starts_one_failover(client, emitter):
    doc = captured("firing-primary-down.json")
    resp = post(client, doc["body"], scheme=doc["authorization_scheme"])
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [r["outcome"] for r in results] == ["emitted", "emitted"]
    assert [r["opened_trigger_window"] for r in results] == [True, False]  # the second is absorbed
    assert {e.intent for e in emitter.events} == {"failover"}
    assert {e.resource.get("regionops.node") for e in emitter.events} == {None, "eu-1"}
    # Alertmanager repeats the notification: nothing new.
    again = post(client, doc["body"])
    assert [r["outcome"] for r in again.json()["results"]] == ["duplicate", "duplicate"]
    assert len(emitter.events) == 2


def test_replication_broken_starts_a_resync_of_that_replica(client, emitter):
    resp = post(client, captured("firing-replication-broken.json")["body"])
    assert resp.status_code == 200, resp.text
    [event] = emitter.events
    assert (event.intent, event.resource["regionops.node"], event.resource["regionops.region"]) == (
        "replica-resync",
        "apac-1",
        "apac",
    )


def test_resolved_notifications_start_nothing(client, emitter):
    resp = post(client, captured("resolved-replication-broken.json")["body"])
    assert resp.status_code == 200
    assert [r["outcome"] for r in resp.json()["results"]] == ["resolved-ignored"]
    assert emitter.events == []


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("not-the-token", "invalid bearer token"),
        (None, "missing Authorization header (expected: Bearer <token>)"),
    ],
)
def test_a_wrong_or_missing_token_is_401_and_starts_nothing(client, emitter, token, reason):
    resp = post(client, captured("firing-primary-down.json")["body"], token=token)
    assert resp.status_code == 401
    assert resp.json()["detail"] == reason
    assert emitter.events == []


def test_malformed_json_is_400_naming_the_problem(client, emitter):
    body = json.dumps(captured("firing-primary-down.json")["body"]).encode()
    resp = post(client, body[: len(body) // 2])
    assert resp.status_code == 400
    assert resp.json()["problems"][0].startswith("body is not valid JSON")
    assert emitter.events == []


def test_an_unknown_cluster_is_422_naming_the_label_and_starts_nothing(client, emitter):
    body = json.loads(json.dumps(captured("firing-primary-down.json")["body"]).replace('"core"', '"nope"'))
    resp = post(client, body)
    assert resp.status_code == 422
    problems = resp.json()["problems"]
    assert len(problems) == 2
    assert all("labels.cluster: unknown cluster 'nope'" in p for p in problems), problems
    assert emitter.events == []
    # Nothing was remembered: the real payload still starts its run afterwards.
    assert post(client, captured("firing-primary-down.json")["body"]).status_code == 200
    assert len(emitter.events) == 2


def test_alertmanagers_slack_message_lands_in_the_lab_sink():
    body = captured("slack-message.json")["body"]
    with SlackSink(token="xoxb-test") as sink:
        import urllib.request

        req = urllib.request.Request(
            sink.api_url + "chat.postMessage",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": "Bearer xoxb-test"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - the local sink
            assert json.loads(resp.read())["ok"] is True
        hook = urllib.request.Request(
            sink.url + "/services/T0/B0/x", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(hook, timeout=5) as resp:  # noqa: S310 - the local sink
            assert resp.read() == b"ok"
        messages = sink.messages()
    assert len(messages) == 2
    assert messages[0]["channel"] == body["channel"]
    assert messages[0]["attachments"] == body["attachments"]
    assert messages[0]["text"] == body["attachments"][0]["fallback"]
