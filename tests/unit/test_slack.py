"""SlackNotifier against the lab's Slack sink, through the real slack_sdk WebClient."""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from regionops.drivers.notify import (
    Notifier,
    NotifyResult,
    NullNotifier,
    SlackNotifier,
    ThreadRef,
    notifier_for,
)
from regionops.lab.slack_sink import SlackSink, read_messages, read_store
from regionops.topology import parse_topology

TOKEN = "xoxb-sink-test-token"
CHANNEL = "#regionops-runs"
RUN_URL = "http://prefect.lab/runs/flow-run/1234"
TS_FORMAT = re.compile(r"^\d{10}\.\d{6}$")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "slack-events.jsonl"


@pytest.fixture
def sink(store: Path) -> Iterator[SlackSink]:
    sink = SlackSink(host="127.0.0.1", port=0, token=TOKEN, store_path=store).start()
    yield sink
    sink.stop()


def client_for(sink: SlackSink, token: str = TOKEN, timeout: float = 2) -> WebClient:
    return WebClient(token=token, base_url=sink.api_url, timeout=timeout)


@pytest.fixture
def notifier(sink: SlackSink) -> SlackNotifier:
    return SlackNotifier(client_for(sink), CHANNEL)


def test_a_run_is_one_thread_whose_root_shows_the_final_status(sink: SlackSink, notifier: SlackNotifier) -> None:
    thread = notifier.start_thread("Failover core to eu-1", ["cluster: core", "candidate: eu-1"], "running")
    assert thread is not None and thread.channel == CHANNEL

    [root] = sink.messages()
    assert root["ts"] == thread.ts and TS_FORMAT.match(root["ts"])
    assert root["thread_ts"] is None
    assert "Failover core to eu-1" in root["text"] and "running" in root["text"]
    assert [b["type"] for b in root["blocks"]][0] == "header"

    step = notifier.post(thread, "*fenced* old primary us-1")
    assert step == NotifyResult(ok=True, ts=step.ts)
    done = notifier.finish(thread, "Failover core to eu-1", "succeeded", ["new primary: eu-1", "RTO 12s"], RUN_URL)
    assert done.ok and done.error is None

    root, reply, summary = sink.messages()
    assert reply["thread_ts"] == summary["thread_ts"] == thread.ts
    assert reply["text"] == "*fenced* old primary us-1" and reply["blocks"]
    assert "succeeded" in summary["text"] and "new primary: eu-1" in summary["text"]
    assert any(b["type"] == "context" and RUN_URL in json.dumps(b) for b in summary["blocks"])
    # the root now carries the final status and the link; the first version is history
    assert "succeeded" in root["text"] and RUN_URL in root["text"]
    assert "cluster: core" in root["text"]  # the start lines are kept
    assert ":white_check_mark:" in root["text"]
    assert root["edited"] is not None
    assert [v["text"] for v in root["history"]] == [sink.messages()[0]["history"][0]["text"]]
    assert "running" in root["history"][0]["text"]
    assert any(b["type"] == "section" and "succeeded" in b["text"]["text"] for b in root["blocks"])
    assert float(root["ts"]) < float(reply["ts"]) < float(summary["ts"])
    assert notifier.failures == []


def test_conversations_replies_returns_the_thread(sink: SlackSink, notifier: SlackNotifier) -> None:
    thread = notifier.start_thread("Backup core", ["to: us-1 bucket"], "running")
    assert thread is not None
    notifier.post(thread, "base backup taken")
    notifier.alert("unrelated", ["not in the thread"])
    notifier.post(thread, "copied to eu-1")

    replies = client_for(sink).conversations_replies(channel=CHANNEL, ts=thread.ts)
    texts = [m["text"] for m in replies["messages"]]
    assert len(texts) == 3 and "Backup core" in texts[0]
    assert texts[1:] == ["base backup taken", "copied to eu-1"]
    assert replies["messages"][0]["reply_count"] == 2
    assert all(m["thread_ts"] == thread.ts for m in replies["messages"])


def test_wrong_token_is_reported_not_raised_and_nothing_is_stored(
    sink: SlackSink, caplog: pytest.LogCaptureFixture
) -> None:
    bad_token = "xoxb-wrong-token"
    notifier = SlackNotifier(client_for(sink, token=bad_token), CHANNEL)
    with caplog.at_level(logging.WARNING):
        assert notifier.start_thread("Failover", ["x"], "running") is None
        result = notifier.alert("Region eu degraded", ["lag 20 MB"], RUN_URL)
        finish = notifier.finish(None, "Failover", "failed", ["x"], RUN_URL)

    assert result.ok is False and result.error == "invalid_auth"
    assert finish.ok is False and finish.error == "invalid_auth"
    assert sink.messages() == []
    assert notifier.failures == ["chat_postMessage: invalid_auth"] * 3
    assert "invalid_auth" in caplog.text
    assert bad_token not in caplog.text


def test_slack_down_returns_quickly_without_raising(sink: SlackSink) -> None:
    notifier = SlackNotifier(client_for(sink, timeout=1), CHANNEL)
    sink.stop()  # connection refused from now on

    started = time.monotonic()
    thread = notifier.start_thread("Failover", ["x"], "running")
    step = notifier.post(thread, "step")
    alert = notifier.alert("Region down", ["eu-1"])
    done = notifier.finish(ThreadRef(channel=CHANNEL, ts="1700000000.000100"), "Failover", "failed", ["x"], None)
    elapsed = time.monotonic() - started

    assert thread is None
    assert step.ok is False and step.skipped  # no thread, nothing sent
    assert alert.ok is False and alert.skipped and "refused" in (alert.error or "").lower()
    assert done.ok is False and "refused" in (done.error or "").lower()
    methods = [f.split(":")[0] for f in notifier.failures]
    assert methods == ["chat_postMessage", "chat_postMessage", "chat_postMessage", "chat_update"]
    # two real attempts (start, summary), each retried once by slack_sdk after < 1.5 s
    assert elapsed < 5


def test_unreachable_slack_is_skipped_until_the_cooldown_ends(sink: SlackSink) -> None:
    now = [1000.0]
    notifier = SlackNotifier(client_for(sink, timeout=1), CHANNEL, cooldown_seconds=30, clock=lambda: now[0])
    port = sink.port
    sink.stop()
    first = notifier.alert("one", [])
    assert first.ok is False and not first.skipped

    with SlackSink(port=port, token=TOKEN) as back:
        assert notifier.alert("two", []).skipped  # still cooling down: no call, no wait
        now[0] += 31
        assert notifier.alert("three", []).ok
        assert [m["text"].split("\n")[0] for m in back.messages()] == [":rotating_light: *three*"]
    assert len(notifier.failures) == 2


def test_slow_slack_times_out_without_raising() -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        client = WebClient(token=TOKEN, base_url=f"http://127.0.0.1:{port}/api/", timeout=0.5)
        notifier = SlackNotifier(client, CHANNEL)

        started = time.monotonic()
        result = notifier.alert("Region down", ["eu-1"])
        assert time.monotonic() - started < 5

    assert result.ok is False and "timed out" in (result.error or "").lower()
    assert notifier.failures and notifier.failures[0].startswith("chat_postMessage: ")


def test_store_file_has_every_event_and_replays(sink: SlackSink, notifier: SlackNotifier, store: Path) -> None:
    thread = notifier.start_thread("Restore drill", ["from: latest"], "running")
    notifier.post(thread, "restored")
    notifier.finish(thread, "Restore drill", "problems found", ["fingerprint mismatch on orders"], RUN_URL)

    events = [json.loads(line) for line in store.read_text().splitlines()]
    assert [e["event"] for e in events] == ["post", "post", "post", "update"]
    assert all(e["message"]["channel"] == CHANNEL and e["at"] for e in events)
    assert events[-1]["message"]["ts"] == events[0]["message"]["ts"]
    assert ":warning:" in events[-1]["message"]["text"]
    assert TOKEN not in store.read_text()
    assert read_store(store) == sink.messages()

    sink.stop()
    with SlackSink(store_path=store) as again:  # a restarted sink keeps what was posted
        assert again.messages() == read_store(store)
        later = SlackNotifier(client_for(again), CHANNEL).alert("after restart", [])
        assert float(later.ts or 0) > float(events[-2]["message"]["ts"])


def test_read_back_endpoints(sink: SlackSink, notifier: SlackNotifier) -> None:
    notifier.alert("to runs", ["a"])
    SlackNotifier(client_for(sink), "#other").alert("to other", ["b"])

    everything = read_messages(sink.url)
    assert [m["channel"] for m in everything] == [CHANNEL, "#other"]
    assert read_messages(sink.api_url, channel="#other") == [everything[1]]  # a Web API base URL works too
    assert everything == sink.messages()

    sink.clear()
    assert read_messages(sink.url) == []


def test_sink_speaks_the_web_api(sink: SlackSink) -> None:
    client = client_for(sink)
    assert client.auth_test()["ok"] is True

    # form-urlencoded body (api_call with params), token in the body instead of the header
    anonymous = WebClient(base_url=sink.api_url, timeout=2)
    posted = anonymous.api_call("chat.postMessage", params={"token": TOKEN, "channel": CHANNEL, "text": "form"})
    assert posted["ok"] and TS_FORMAT.match(posted["ts"])
    assert sink.messages()[0]["text"] == "form"

    for call, error in [
        (lambda: client.api_call("files.upload_v9"), "unknown_method"),
        (lambda: client.chat_postMessage(channel="", text="no channel"), "channel_not_found"),
        (lambda: client.chat_update(channel=CHANNEL, ts="1.000001", text="x"), "message_not_found"),
        (lambda: client.conversations_replies(channel=CHANNEL, ts="1.000001"), "thread_not_found"),
        (lambda: anonymous.auth_test(), "invalid_auth"),
    ]:
        with pytest.raises(SlackApiError) as info:
            call()
        assert info.value.response["error"] == error

    ts = [client.chat_postMessage(channel=CHANNEL, text=str(i))["ts"] for i in range(5)]
    assert ts == sorted(ts, key=float) and len(set(ts)) == 5


def test_notifier_for_follows_the_topology(sink: SlackSink, monkeypatch: pytest.MonkeyPatch) -> None:
    def topology(notifications: dict) -> dict:
        return {
            "name": "lab",
            "regions": {
                "us-1": {
                    "aws_region": "us-east-1",
                    "residency": "us",
                    "app_url": "http://127.0.0.1:8001",
                    "bucket": "backups-us-1",
                    "work_pool": "us-1",
                }
            },
            "clusters": {
                "core": {
                    "nodes": {"us-1": {"region": "us-1", "host": "127.0.0.1", "port": 5433, "data_dir": "/tmp/x"}},
                    "writer_record": "writer.core.db.lab.",
                }
            },
            "traffic": {"route53_zone": "db.lab."},
            "notifications": notifications,
        }

    quiet = notifier_for(parse_topology(topology({})))
    assert isinstance(quiet, NullNotifier) and quiet.failures == []
    assert quiet.start_thread("x", [], "running") is None and quiet.post(None, "x").ok

    slack = {"slack": {"channel": CHANNEL, "token": {"env": "LAB_SLACK_TOKEN"}, "base_url": sink.api_url}}
    monkeypatch.delenv("LAB_SLACK_TOKEN", raising=False)
    missing = notifier_for(parse_topology(topology(slack)))
    assert isinstance(missing, NullNotifier) and "LAB_SLACK_TOKEN" in missing.failures[0]

    monkeypatch.setenv("LAB_SLACK_TOKEN", TOKEN)
    live = notifier_for(parse_topology(topology(slack)), timeout=2)
    assert isinstance(live, SlackNotifier) and isinstance(live, Notifier)
    assert live.alert("configured", ["via topology"]).ok
    assert [m["channel"] for m in sink.messages()] == [CHANNEL]


def test_text_is_escaped_but_slack_links_survive(sink: SlackSink, notifier: SlackNotifier) -> None:
    lines = ["lag > 16 MB & rising", f"<{RUN_URL}|Prefect run>", "<!here> look"] + ["x" * 500] * 20
    assert notifier.alert("lag <threshold>", lines, RUN_URL).ok
    [message] = sink.messages()
    assert "lag &lt;threshold&gt;" in message["text"]
    assert "lag &gt; 16 MB &amp; rising" in message["text"]
    assert f"<{RUN_URL}|Prefect run>" in message["text"] and "<!here> look" in message["text"]
    sections = [b["text"]["text"] for b in message["blocks"] if b["type"] == "section"]
    assert sections and all(len(text) <= 3000 for text in sections)
    assert len(message["blocks"][0]["text"]["text"]) <= 150
