"""The alert receiver without Prefect: token, payload validation, mapping, dedup, ledger, triggers.

The emitter is a fake that keeps what it was given (or fails on demand); everything
else is the real code, over HTTP through FastAPI's TestClient.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from prefect.cli.deploy._triggers import _initialize_deployment_triggers
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
from pydantic import BaseModel

from deployments import triggers as trig
from regionops.alerting.emitter import EmitFailed
from regionops.alerting.intents import ALERT_INTENTS, EVENT_NAME, INTENTS, alert_event, intent_for
from regionops.alerting.ledger import AlertLedger
from regionops.alerting.payload import AlertmanagerPayload
from regionops.alerting.processing import AlertProcessor
from regionops.alerting.receiver import ALERTS_PATH, create_app, read_token
from regionops.errors import ConfigurationError
from regionops.topology import parse_topology

TOKEN = "s3cr3t-alert-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STARTS = "2024-05-01T03:00:00.123456789Z"


class FakeEmitter:
    """Keeps every batch; fails with EmitFailed while ``failing`` is set."""

    def __init__(self, delay: float = 0):
        self.batches: list[list] = []
        self.failing = False
        self.delay = delay

    async def emit(self, events: Sequence) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.failing:
            raise EmitFailed("could not deliver events to the Prefect API at http://prefect.test/api: boom")
        if events:
            self.batches.append(list(events))

    @property
    def events(self) -> list:
        return [e for batch in self.batches for e in batch]


class Clock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def alert(
    name: str = "PostgresPrimaryDown",
    fingerprint: str = "5f1c2a9e0b7d4c11",
    status: str = "firing",
    starts: str = STARTS,
    **labels: str,
) -> dict:
    labels = {"cluster": "core", "region": "eu", "node": "eu-1", **labels}
    return {
        "status": status,
        "labels": {"alertname": name, "severity": "page", **{k: v for k, v in labels.items() if v is not None}},
        "annotations": {"summary": f"{name} on {labels.get('node')}", "runbook_url": "https://runbooks/failover"},
        "startsAt": starts,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=pg_up",
        "fingerprint": fingerprint,
    }


def payload(*alerts: dict, status: str = "firing") -> dict:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="PostgresPrimaryDown"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "regionops",
        "groupLabels": {"alertname": "PostgresPrimaryDown"},
        "commonLabels": {"cluster": "core"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts) or [alert()],
    }


TOPOLOGY_DOC = {
    "name": "unit",
    "regions": {
        r: {"aws_region": a, "residency": r, "app_url": f"http://app-{r}", "bucket": f"b-{r}", "work_pool": f"p-{r}"}
        for r, a in {"eu": "eu-west-1", "us": "us-east-1"}.items()
    },
    "clusters": {
        "core": {
            "nodes": {
                "eu-1": {"region": "eu", "host": "10.0.1.5", "port": 5432, "data_dir": "/pg"},
                "us-1": {"region": "us", "host": "10.0.2.5", "port": 5432, "data_dir": "/pg"},
            },
            "writer_record": "writer.core.db.example.com",
        }
    },
    "traffic": {"route53_zone": "db.example.com"},
}


@pytest.fixture
def emitter() -> FakeEmitter:
    return FakeEmitter()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(tmp_path: Path, clock: Clock) -> AlertLedger:
    return AlertLedger(tmp_path / "state" / "ledger.json", clock=clock)


@pytest.fixture
def client(emitter: FakeEmitter, ledger: AlertLedger) -> TestClient:
    return TestClient(create_app(emitter, TOKEN, ledger))


def post(client: TestClient, body, headers: dict | None = AUTH):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(ALERTS_PATH, content=data, headers={"Content-Type": "application/json", **(headers or {})})


def outcomes(resp) -> list[str]:
    return [r["outcome"] for r in resp.json()["results"]]


# -- token --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers, reason",
    [
        ({}, "missing Authorization header"),
        ({"Authorization": "Bearer wrong-token"}, "invalid bearer token"),
        ({"Authorization": f"Basic {TOKEN}"}, "not a bearer token"),
        ({"Authorization": "Bearer "}, "not a bearer token"),
    ],
)
def test_missing_or_wrong_token_is_401_and_emits_nothing(client, emitter, headers, reason):
    resp = post(client, payload(), headers)
    assert resp.status_code == 401
    assert reason in resp.json()["detail"]
    assert TOKEN not in resp.text
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert emitter.events == []


def test_token_is_never_logged(client, caplog):
    caplog.set_level("DEBUG")
    post(client, payload(), {"Authorization": "Bearer guess-123"})
    post(client, payload())
    assert TOKEN not in caplog.text and "guess-123" not in caplog.text


def test_token_comes_from_a_file_or_an_environment_variable(tmp_path, monkeypatch):
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    assert read_token(str(f), None) == TOKEN
    monkeypatch.setenv("MY_ALERT_TOKEN", "from-env")
    assert read_token(None, "MY_ALERT_TOKEN") == "from-env"
    with pytest.raises(ConfigurationError, match="env:UNSET_ALERT_TOKEN is not set"):
        read_token(None, "UNSET_ALERT_TOKEN")
    with pytest.raises(ConfigurationError, match="non-empty bearer token"):
        create_app(FakeEmitter(), "")


# -- payload validation -------------------------------------------------------------
def test_body_that_is_not_json_is_400(client, emitter):
    resp = post(client, b"{not json")
    assert resp.status_code == 400
    assert "not valid JSON" in resp.json()["problems"][0]
    assert emitter.events == []


@pytest.mark.parametrize("version, named", [("3", "version '3'"), (4, "version 4"), (None, "no version field")])
def test_wrong_version_is_400_naming_it(client, emitter, version, named):
    body = payload()
    if version is None:
        del body["version"]
    else:
        body["version"] = version
    resp = post(client, body)
    assert resp.status_code == 400
    assert named in resp.json()["problems"][0] and "accepts version '4'" in resp.json()["problems"][0]
    assert emitter.events == []


@pytest.mark.parametrize(
    "mutate, problem",
    [
        (lambda b: b["alerts"][0].pop("fingerprint"), "alerts.0.fingerprint: required field is missing"),
        (lambda b: b["alerts"][0].update(status="exploding"), "alerts.0.status:"),
        (lambda b: b["alerts"][0].update(startsAt="yesterday"), "alerts.0.startsAt:"),
        (lambda b: b["alerts"][0].update(startsAt="2024-05-01T03:00:00"), "alerts.0.startsAt:"),
        (lambda b: b["alerts"][0]["labels"].update(cluster=7), "alerts.0.labels.cluster:"),
        (lambda b: b.pop("groupKey"), "groupKey: required field is missing"),
        (lambda b: b.update(alerts="many"), "alerts:"),
        (lambda b: b.update(truncatedAlerts=-1), "truncatedAlerts:"),
    ],
)
def test_schema_problems_are_422_naming_the_field(client, emitter, mutate, problem):
    body = payload(alert(), alert(fingerprint="0000000000000002"))
    mutate(body)
    resp = post(client, body)
    assert resp.status_code == 422, resp.text
    assert any(p.startswith(problem) for p in resp.json()["problems"]), resp.json()
    assert "nothing was emitted" in resp.json()["detail"]
    assert emitter.events == []


def test_top_level_array_is_422(client):
    resp = post(client, [payload()])
    assert resp.status_code == 422
    assert "expected a JSON object" in resp.json()["problems"][0]


def test_missing_cluster_label_rejects_the_whole_notification(client, emitter):
    good = alert(fingerprint="0000000000000001")
    bad = alert(fingerprint="0000000000000002", cluster=None)
    body = payload(good, bad)
    body["commonLabels"] = {}
    resp = post(client, body)
    assert resp.status_code == 422
    assert resp.json()["problems"] == ["alerts.1.labels.cluster: required for PostgresPrimaryDown (failover), missing"]
    assert emitter.events == []


def test_resync_alert_needs_a_node_label(client, emitter):
    resp = post(client, payload(alert("PostgresReplicaLagging", node=None)))
    assert resp.status_code == 422
    assert "alerts.0.labels.node (or instance): required for PostgresReplicaLagging" in resp.json()["problems"][0]
    assert emitter.events == []


def test_label_values_must_be_plain_names(client, emitter):
    resp = post(client, payload(alert(cluster="core'}} {{ evil")))
    assert resp.status_code == 422
    assert "alerts.0.labels.cluster:" in resp.json()["problems"][0]
    assert emitter.events == []


def test_oversized_body_is_413(emitter, ledger):
    small = TestClient(create_app(emitter, TOKEN, ledger, max_body_bytes=200))
    assert post(small, payload()).status_code == 413
    chunked = small.post(ALERTS_PATH, content=iter([json.dumps(payload()).encode()]), headers=AUTH)
    assert chunked.status_code == 413, "no Content-Length: cut off while reading"
    assert emitter.events == []


def test_extra_fields_from_a_newer_alertmanager_are_accepted(client, emitter):
    body = payload()
    body["somethingNew"] = {"x": 1}
    body["alerts"][0]["silencedBy"] = []
    assert post(client, body).status_code == 200
    assert len(emitter.events) == 1


# -- mapping and events -------------------------------------------------------------
def test_primary_down_emits_one_failover_event_with_labels_and_payload(client, emitter):
    resp = post(client, payload())
    assert resp.status_code == 200, resp.text
    [result] = resp.json()["results"]
    assert result["outcome"] == "emitted" and result["intent"] == "failover" and result["cluster"] == "core"
    assert result["opened_trigger_window"] is True
    [event] = emitter.events
    assert event.event == EVENT_NAME == "regionops.alert.firing"
    assert event.resource == {
        "prefect.resource.id": "regionops.cluster.core",
        "prefect.resource.name": "core",
        "regionops.cluster": "core",
        "regionops.region": "eu",
        "regionops.node": "eu-1",
        "regionops.alertname": "PostgresPrimaryDown",
        "regionops.intent": "failover",
        "regionops.fingerprint": "5f1c2a9e0b7d4c11",
    }
    assert event.payload["fingerprint"] == "5f1c2a9e0b7d4c11"
    assert event.payload["startsAt"] == "2024-05-01T03:00:00.123456+00:00"
    assert event.payload["annotations"]["summary"] == "PostgresPrimaryDown on eu-1"
    assert str(event.id) == result["event_id"]


@pytest.mark.parametrize("name", ["PostgresReplicaLagging", "PostgresReplicationBroken"])
def test_replica_alerts_map_to_resync(client, emitter, name):
    resp = post(client, payload(alert(name, node="apac-1", region="apac")))
    assert outcomes(resp) == ["emitted"]
    [event] = emitter.events
    assert event.resource["regionops.intent"] == "replica-resync"
    assert event.resource["regionops.node"] == "apac-1"


def test_mapping_is_data_in_one_place():
    assert ALERT_INTENTS == {
        "PostgresPrimaryDown": "failover",
        "PostgresReplicaLagging": "replica-resync",
        "PostgresReplicationBroken": "replica-resync",
    }
    assert intent_for("PostgresPrimaryDown").runbook == "failover"
    assert intent_for("DiskFull") is None
    assert set(ALERT_INTENTS.values()) == set(INTENTS)


def test_instance_label_stands_in_for_node(client, emitter):
    post(client, payload(alert(node=None, instance="db-eu-1")))
    assert emitter.events[0].resource["regionops.node"] == "db-eu-1"


def test_resolved_and_unknown_alerts_start_nothing(client, emitter):
    resp = post(
        client,
        payload(
            alert(status="resolved"),
            alert("DiskAlmostFull", fingerprint="00000000000000aa"),
            status="resolved",
        ),
    )
    assert resp.status_code == 200
    assert outcomes(resp) == ["resolved-ignored", "unknown-alertname-ignored"]
    assert "DiskAlmostFull" in resp.json()["results"][1]["detail"]
    assert emitter.events == []


def test_mixed_notification_reports_each_alert(client, emitter):
    resp = post(
        client,
        payload(
            alert(fingerprint="00000000000000a1"),
            alert(status="resolved", fingerprint="00000000000000a2"),
            alert("Watchdog", fingerprint="00000000000000a3", cluster=None),
            alert("PostgresReplicaLagging", fingerprint="00000000000000a4", node="us-1"),
        ),
    )
    assert outcomes(resp) == ["emitted", "resolved-ignored", "unknown-alertname-ignored", "emitted"]
    assert resp.json()["emitted"] == 2
    assert "2 emitted, 1 resolved-ignored, 1 unknown-alertname-ignored" in resp.json()["summary"]
    assert len(emitter.batches) == 1, "one request to Prefect per notification"


def test_event_id_is_derived_from_fingerprint_and_start():
    p = AlertmanagerPayload.model_validate(payload())
    same = AlertmanagerPayload.model_validate(payload(alert(starts="2024-05-01T05:00:00.123456+02:00")))
    later = AlertmanagerPayload.model_validate(payload(alert(starts="2024-05-01T04:00:00Z")))
    ids = [alert_event(x.alerts[0], x, INTENTS["failover"]).id for x in (p, same, later)]
    assert ids[0] == ids[1] != ids[2]


# -- dedup --------------------------------------------------------------------------
def test_same_payload_twice_emits_once(client, emitter):
    assert outcomes(post(client, payload())) == ["emitted"]
    second = post(client, payload())
    assert outcomes(second) == ["duplicate"]
    assert "already sent" in second.json()["results"][0]["detail"]
    assert len(emitter.events) == 1


def test_twenty_copies_emit_one_event(client, emitter):
    results = [outcomes(post(client, payload())) for _ in range(20)]
    assert results.count(["emitted"]) == 1 and results.count(["duplicate"]) == 19
    assert len(emitter.events) == 1


def test_concurrent_copies_emit_one_event(ledger):
    slow = FakeEmitter(delay=0.01)
    processor = AlertProcessor(slow, ledger)
    parsed = AlertmanagerPayload.model_validate(payload())

    async def storm():
        return await asyncio.gather(*(processor.process(parsed) for _ in range(20)))

    receipts = asyncio.run(storm())
    assert sum(r.emitted for r in receipts) == 1
    assert len(slow.events) == 1


def test_same_alert_twice_in_one_payload_emits_once(client, emitter):
    resp = post(client, payload(alert(), alert()))
    assert outcomes(resp) == ["emitted", "duplicate"]
    assert len(emitter.events) == 1


def test_alert_that_fires_again_later_is_new(client, emitter):
    post(client, payload())
    resp = post(client, payload(alert(starts="2024-05-01T09:00:00Z")))
    assert outcomes(resp) == ["emitted"]
    assert len(emitter.events) == 2


def test_ledger_survives_a_restart(tmp_path, clock):
    path = tmp_path / "ledger.json"
    first = FakeEmitter()
    post(TestClient(create_app(first, TOKEN, AlertLedger(path, clock=clock))), payload())
    restarted = FakeEmitter()
    resp = post(TestClient(create_app(restarted, TOKEN, AlertLedger(path, clock=clock))), payload())
    assert outcomes(resp) == ["duplicate"]
    assert restarted.events == [] and len(first.events) == 1


def test_seen_alerts_expire_after_the_ttl(tmp_path, clock):
    emitter = FakeEmitter()
    client = TestClient(create_app(emitter, TOKEN, AlertLedger(tmp_path / "l.json", ttl_seconds=3600, clock=clock)))
    post(client, payload())
    clock.now += 3599
    assert outcomes(post(client, payload())) == ["duplicate"]
    clock.now += 2
    assert outcomes(post(client, payload())) == ["emitted"]


def test_ledger_stays_small(tmp_path, clock):
    path = tmp_path / "l.json"
    ledger = AlertLedger(path, max_entries=3, clock=clock)
    client = TestClient(create_app(FakeEmitter(), TOKEN, ledger))
    for i in range(6):
        clock.now += 1
        post(client, payload(alert(fingerprint=f"{i:016x}", cluster=f"c{i}")))
    seen = json.loads(path.read_text())["seen"]
    assert len(seen) == 3
    assert sorted(k.split("@")[0] for k in seen) == [f"{i:016x}" for i in (3, 4, 5)]


def test_corrupt_ledger_is_moved_aside_and_the_receiver_starts(tmp_path, caplog):
    path = tmp_path / "l.json"
    path.write_text("{half a file")
    ledger = AlertLedger(path)
    assert ledger.state.seen == {}
    assert path.with_suffix(".corrupt").exists()
    assert "unreadable" in caplog.text


def test_delivery_failure_is_503_and_nothing_is_recorded(client, emitter):
    emitter.failing = True
    resp = post(client, payload())
    assert resp.status_code == 503
    assert "could not deliver" in resp.json()["detail"]
    emitter.failing = False
    assert outcomes(post(client, payload())) == ["emitted"], "a retry after a failure is not a duplicate"
    assert len(emitter.events) == 1


# -- a second alert for a cluster already being handled ----------------------------------
def test_different_alert_for_the_same_cluster_is_reported_as_absorbed(client, emitter, clock):
    post(client, payload())
    clock.now += 30
    resp = post(client, payload(alert(fingerprint="99999999999999aa", node="eu-1b")))
    [result] = resp.json()["results"]
    assert result["outcome"] == "emitted" and result["opened_trigger_window"] is False
    assert "already requested 30 s ago by alert 5f1c2a9e0b7d4c11" in result["detail"]
    assert "no second run" in result["detail"]
    clock.now += 900
    resp = post(client, payload(alert(fingerprint="99999999999999bb")))
    assert resp.json()["results"][0]["opened_trigger_window"] is True


def test_resync_while_failover_is_requested_says_it_waits_for_the_lock(client, clock):
    post(client, payload())
    clock.now += 5
    resp = post(client, payload(alert("PostgresReplicationBroken", fingerprint="00000000000000b1", node="us-1")))
    detail = resp.json()["results"][0]["detail"]
    assert "failover of cluster core was requested" in detail
    assert "cluster lock regionops-cluster-core" in detail


# -- topology-aware labels ----------------------------------------------------------------
def test_with_a_topology_unknown_clusters_are_rejected_and_instances_resolved(emitter, ledger):
    client = TestClient(create_app(emitter, TOKEN, ledger, parse_topology(copy.deepcopy(TOPOLOGY_DOC))))
    resp = post(client, payload(alert(cluster="nope")))
    assert resp.status_code == 422
    assert "unknown cluster 'nope'" in resp.json()["problems"][0]
    resp = post(client, payload(alert("PostgresReplicaLagging", node=None, region=None, instance="10.0.2.5:5432")))
    assert outcomes(resp) == ["emitted"]
    assert emitter.events[0].resource["regionops.node"] == "us-1"
    assert emitter.events[0].resource["regionops.region"] == "us"
    resp = post(client, payload(alert("PostgresReplicaLagging", fingerprint="0000000000000ccc", node="10.9.9.9:1")))
    assert resp.status_code == 422 and "neither a node of cluster core" in resp.json()["problems"][0]


def test_healthz_needs_no_token(client):
    assert client.get("/healthz").json() == {"status": "ok"}


# -- triggers -------------------------------------------------------------------------------
@pytest.mark.parametrize("intent", sorted(INTENTS))
def test_trigger_is_reactive_once_per_key_within_the_cooldown(intent):
    [t] = trig.deployment_triggers(intent)
    assert isinstance(t, DeploymentEventTrigger)
    assert t.expect == {EVENT_NAME}
    assert t.posture == "Reactive" and t.threshold == 1
    assert t.within.total_seconds() == INTENTS[intent].cooldown_seconds > 0
    assert t.for_each == set(INTENTS[intent].for_each)
    assert t.match.model_dump()["regionops.intent"] == intent
    assert t.schedule_after.total_seconds() == 0


def test_failover_trigger_is_per_cluster_and_resync_per_node():
    assert trig.deployment_triggers("failover")[0].for_each == {"regionops.cluster"}
    assert trig.deployment_triggers("replica-resync")[0].for_each == {"regionops.cluster", "regionops.node"}
    with pytest.raises(ConfigurationError, match="unknown alert intent 'reboot'"):
        trig.deployment_triggers("reboot")


@pytest.mark.parametrize("intent", sorted(INTENTS))
def test_trigger_templates_only_use_labels_the_events_carry(intent):
    name = next(a for a, i in ALERT_INTENTS.items() if i == intent)
    parsed = AlertmanagerPayload.model_validate(payload(alert(name)))
    event = alert_event(parsed.alerts[0], parsed, INTENTS[intent])
    text = json.dumps(INTENTS[intent].parameters)
    required = re.findall(r"event\.resource\['([^']+)'\]", text)
    optional = re.findall(r"event\.resource\.get\('([^']+)'\)", text)
    assert required and all(label in event.resource for label in required)
    assert all(label.startswith("regionops.") for label in optional)
    assert all(label in event.resource for label in INTENTS[intent].for_each)
    assert set(re.findall(r"event\.payload\['([^']+)'\]", text)) <= set(event.payload)


def test_fixed_params_are_merged_into_what_the_trigger_passes():
    [t] = trig.deployment_triggers("failover", {"topology": "/etc/regionops/prod.yaml", "cluster": "ignored"})
    params = t.parameters["params"]
    assert params["topology"] == "/etc/regionops/prod.yaml"
    assert params["cluster"] == "{{ event.resource['regionops.cluster'] }}", "event values win"
    assert "topology" not in INTENTS["failover"].parameters["params"], "the definition itself is not changed"


def test_triggers_for_a_runbook():
    assert [t.name for t in trig.triggers_for("failover")] == ["alert: failover"]
    assert [t.name for t in trig.triggers_for("replica-resync")] == ["alert: replica-resync"]
    assert trig.triggers_for("region-health") == []


def test_triggers_yaml_is_generated_from_the_definitions():
    assert trig.TRIGGERS_YAML.read_text() == trig.render_triggers_yaml(), (
        "deployments/triggers.yaml is stale: run `python -m deployments.triggers --write`"
    )


@pytest.mark.parametrize("intent", sorted(INTENTS))
def test_yaml_form_is_what_prefect_deploy_would_build(intent):
    specs = trig.load_triggers_yaml()[intent]
    [from_yaml] = _initialize_deployment_triggers("failover/default", copy.deepcopy(specs))
    assert from_yaml == trig.deployment_triggers(intent)[0]
    # And the anchors exist for prefect.yaml to reference.
    doc = yaml.safe_load(trig.TRIGGERS_YAML.read_text())
    assert doc["definitions"]["alert_triggers"][intent] == specs
    assert f"&{intent.replace('-', '_')}_alert_triggers" in trig.TRIGGERS_YAML.read_text()


class _GoodParams(BaseModel):
    cluster: str
    node: str | None = None
    reason: str | None = None
    lock_wait_seconds: float = 0
    page_if_no_failover: bool = False
    dry_run: bool = False


class _BadParams(BaseModel):
    cluster_name: str
    node: str | None = None
    reason: str | None = None
    lock_wait_seconds: float = 0
    page_if_no_failover: bool = False


def test_trigger_parameters_are_checked_against_the_flow():
    from prefect import flow

    @flow(name="failover")
    def good(params: _GoodParams) -> None: ...

    @flow(name="failover")
    def bad(params: _BadParams) -> None: ...

    @flow(name="failover")
    def flat(cluster: str) -> None: ...

    trig.check_flow_parameters("failover", good)
    with pytest.raises(ConfigurationError, match="has no field 'cluster'"):
        trig.check_flow_parameters("failover", bad)
    with pytest.raises(ConfigurationError, match="has no parameter 'params'"):
        trig.check_flow_parameters("failover", flat)


@pytest.mark.parametrize("intent", sorted(INTENTS))
def test_triggers_fit_the_real_runbook_flows(intent):
    from flows.registry import runbook

    flow_obj, _ = runbook(INTENTS[intent].runbook).load()
    trig.check_flow_parameters(intent, flow_obj)
