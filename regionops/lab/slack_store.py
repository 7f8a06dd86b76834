"""The Slack sink's storage: messages in memory, every change appended to a JSON-lines store.

:class:`SinkState` is what the sink's HTTP app (:mod:`regionops.lab.slack_sink`) serves:
posts, updates and thread replies with Slack's error codes; :func:`read_store` reads a
store file after the fact.
"""

from __future__ import annotations

import copy
import hmac
import json
import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BOT_USER_ID = "U0REGIONOPS"
BOT_ID = "B0REGIONOPS"
TEAM_ID = "T0REGIONLAB"


class SlackApiFailure(Exception):
    """A Slack-style ``ok: false`` answer; ``error`` is Slack's error code."""

    def __init__(self, error: str):
        super().__init__(error)
        self.error = error


def format_ts(micros: int) -> str:
    """Slack's message timestamp format for a time in microseconds: ``"1700000000.000100"``."""
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def _parse_ts(ts: str) -> int:
    seconds, _, fraction = ts.partition(".")
    return int(seconds) * 1_000_000 + int((fraction + "000000")[:6])


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _apply_event(messages: list[dict[str, Any]], event: dict[str, Any]) -> None:
    """Apply one stored event to a list of messages (used by replay and :func:`read_store`)."""
    kind = event.get("event")
    if kind == "clear":
        messages.clear()
    elif kind == "post":
        messages.append(event["message"])
    elif kind == "update":
        new = event["message"]
        for i, old in enumerate(messages):
            if old["channel"] == new["channel"] and old["ts"] == new["ts"]:
                messages[i] = new
                break


def read_store(path: str | Path) -> list[dict[str, Any]]:
    """The current state of every message recorded in a sink's JSON-lines store file."""
    messages: list[dict[str, Any]] = []
    file = Path(path)
    if not file.exists():
        return messages
    for number, line in enumerate(file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            _apply_event(messages, json.loads(line))
        except (ValueError, KeyError) as exc:
            log.warning("slack sink store %s line %d is unreadable (%s); skipped", file, number, exc)
    return messages


class SinkState:
    """The sink's messages, guarded by one lock, persisted to an optional JSON-lines file."""

    def __init__(self, token: str | None = None, store_path: str | Path | None = None):
        self.token = token
        self.store_path = Path(store_path) if store_path else None
        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []
        self._last_micros = 0
        if self.store_path is not None:
            self._messages = read_store(self.store_path)
            for message in self._messages:
                self._last_micros = max(self._last_micros, _parse_ts(message["ts"]))

    # -- helpers (call with the lock held) ------------------------------------------
    def _next_ts(self) -> str:
        self._last_micros = max(time.time_ns() // 1000, self._last_micros + 1)
        return format_ts(self._last_micros)

    def _find(self, channel: str, ts: str) -> dict[str, Any] | None:
        for message in self._messages:
            if message["channel"] == channel and message["ts"] == ts:
                return message
        return None

    def _record(self, event: str, message: dict[str, Any] | None = None) -> None:
        if self.store_path is None:
            return
        entry: dict[str, Any] = {"event": event, "at": _now_iso()}
        if message is not None:
            entry["message"] = message
        self.store_path.parent.mkdir(parents=True, exist_ok=True)
        with self.store_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")

    # -- operations ------------------------------------------------------------------
    def check_token(self, given: str | None) -> None:
        """Raise ``invalid_auth`` unless ``given`` matches the expected token (if any)."""
        if self.token is None:
            return
        if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
            raise SlackApiFailure("invalid_auth")

    def post(self, args: dict[str, Any]) -> dict[str, Any]:
        """chat.postMessage: store a message (a reply when ``thread_ts`` is given)."""
        channel = _require_channel(args)
        text, blocks = args.get("text"), args.get("blocks")
        attachments = args.get("attachments")
        if isinstance(attachments, str):  # form bodies carry attachments as a JSON string
            try:
                attachments = json.loads(attachments)
            except ValueError:
                raise SlackApiFailure("invalid_attachments") from None
        if attachments is not None and not isinstance(attachments, list):
            raise SlackApiFailure("invalid_attachments")
        if not text and not blocks and not attachments:
            raise SlackApiFailure("no_text")
        if not text and attachments:
            # What Slack shows in notifications for attachment-only messages (Alertmanager's).
            text = "\n".join(
                str(a.get("fallback") or " ".join(filter(None, (a.get("title"), a.get("text")))))
                for a in attachments
                if isinstance(a, dict)
            )
        with self._lock:
            thread_ts = args.get("thread_ts") or None
            if thread_ts is not None:
                parent = self._find(channel, str(thread_ts))
                if parent is None:
                    raise SlackApiFailure("thread_not_found")
                thread_ts = parent["thread_ts"] or parent["ts"]  # replies to replies join the thread
            message = {
                "type": "message",
                "channel": channel,
                "ts": self._next_ts(),
                "thread_ts": thread_ts,
                "user": BOT_USER_ID,
                "bot_id": BOT_ID,
                "text": text or "",
                "blocks": blocks,
                **({"attachments": attachments} if attachments else {}),
                "edited": None,
                "history": [],
            }
            self._messages.append(message)
            self._record("post", message)
            return copy.deepcopy(message)

    def update(self, args: dict[str, Any]) -> dict[str, Any]:
        """chat.update: replace text and/or blocks, keeping the previous version in ``history``."""
        channel = _require_channel(args)
        with self._lock:
            message = self._find(channel, str(args.get("ts") or ""))
            if message is None:
                raise SlackApiFailure("message_not_found")
            if args.get("text") is None and args.get("blocks") is None:
                raise SlackApiFailure("no_text")
            message["history"].append({"text": message["text"], "blocks": message["blocks"]})
            if args.get("text") is not None:
                message["text"] = args["text"]
            if args.get("blocks") is not None:
                message["blocks"] = args["blocks"]
            message["edited"] = {"user": BOT_USER_ID, "ts": self._next_ts()}
            self._record("update", message)
            return copy.deepcopy(message)

    def replies(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        """conversations.replies: the parent message followed by its replies, oldest first."""
        channel = _require_channel(args)
        with self._lock:
            parent = self._find(channel, str(args.get("ts") or ""))
            if parent is None:
                raise SlackApiFailure("thread_not_found")
            root_ts = parent["thread_ts"] or parent["ts"]
            root = self._find(channel, root_ts)
            replies = [m for m in self._messages if m["channel"] == channel and m["thread_ts"] == root_ts]
            thread = [copy.deepcopy(root)] if root is not None else []
            if thread and replies:
                thread[0]["thread_ts"] = root_ts
                thread[0]["reply_count"] = len(replies)
            return thread + copy.deepcopy(replies)

    def messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Every message's current state in post order, optionally of one channel."""
        with self._lock:
            return [copy.deepcopy(m) for m in self._messages if channel is None or m["channel"] == channel]

    def clear(self) -> None:
        """Forget every message (and record that in the store)."""
        with self._lock:
            self._messages.clear()
            self._record("clear")


def _require_channel(args: dict[str, Any]) -> str:
    channel = args.get("channel")
    if not channel or not isinstance(channel, str):
        raise SlackApiFailure("channel_not_found")
    return channel
