"""A Slack Web API look-alike for the lab and the tests: it keeps what runbooks post.

It speaks just enough of the Web API for ``slack_sdk.WebClient(base_url=".../api/")``:
``auth.test``, ``chat.postMessage``, ``chat.update`` and ``conversations.replies``,
with JSON or form-urlencoded bodies (WebClient sends JSON for chat.* and a form for
the rest).  Like Slack it answers HTTP 200 with ``{"ok": false, "error": ...}`` on
failure: ``invalid_auth`` (wrong or missing token when the sink has one),
``unknown_method``, ``channel_not_found``, ``message_not_found``, ``thread_not_found``,
``no_text``.  ``chat.postMessage`` also takes ``attachments`` alone (what Alertmanager's
``slack_configs`` send; the message's text is then their fallback), and
``POST /services/...`` is an incoming webhook (JSON message in, ``ok`` out).

Messages live in memory; with a store path every change is also appended to a
JSON-lines file (``{"event": "post"|"update"|"clear", "at": ..., "message": {...}}``),
which is replayed on start and can be read after the fact with :func:`read_store`.
Read-back for tests and demos: ``GET /messages[?channel=C]`` (current state, in post
order) and ``DELETE /messages``; ``GET /healthz`` answers ``{"ok": true}``.

Run it as ``python -m regionops.lab.slack_sink --host 127.0.0.1 --port N
[--token-file F] [--store F]``; it prints its URL once it listens.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from regionops.lab.slack_store import (
    BOT_ID,
    BOT_USER_ID,
    TEAM_ID,
    SinkState,
    SlackApiFailure,
    read_store,
)

log = logging.getLogger(__name__)


class _Handler(BaseHTTPRequestHandler):
    """Routes ``/api/<method>`` to the sink's state; ``/messages`` and ``/healthz`` for read-back."""

    server: _SinkServer
    server_version = "regionops-slack-sink/1"

    # -- plumbing --------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("slack sink: " + format, *args)

    def _send_json(self, body: Any, status: int = 200) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _read_args(self) -> dict[str, Any]:
        """Query string, then the JSON or form body, merged into one dict."""
        url = urllib.parse.urlsplit(self.path)
        args: dict[str, Any] = dict(urllib.parse.parse_qsl(url.query))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if raw:
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype == "application/json":
                body = json.loads(raw.decode("utf-8"))
                if not isinstance(body, dict):
                    raise SlackApiFailure("invalid_json")
                args.update(body)
            else:
                args.update(urllib.parse.parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        blocks = args.get("blocks")
        if isinstance(blocks, str):  # form bodies carry blocks as a JSON string
            try:
                args["blocks"] = json.loads(blocks)
            except ValueError:
                raise SlackApiFailure("invalid_blocks") from None
        return args

    def _token(self, args: dict[str, Any]) -> str | None:
        auth = self.headers.get("Authorization") or ""
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        token = args.get("token")
        return str(token) if token else None

    # -- routes ----------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/messages":
            channel = dict(urllib.parse.parse_qsl(url.query)).get("channel")
            self._send_json(self.server.state.messages(channel))
        elif url.path == "/healthz":
            self._send_json({"ok": True})
        elif url.path.startswith("/api/"):
            self._api(url.path[len("/api/") :])
        else:
            self._send_json({"ok": False, "error": "not_found"}, status=404)

    def do_POST(self) -> None:  # noqa: N802
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith("/api/"):
            self._api(path[len("/api/") :])
        elif path.startswith("/services/"):
            self._incoming_webhook()
        else:
            self._send_json({"ok": False, "error": "not_found"}, status=404)

    def do_DELETE(self) -> None:  # noqa: N802
        if urllib.parse.urlsplit(self.path).path == "/messages":
            self.server.state.clear()
            self._send_json({"ok": True})
        else:
            self._send_json({"ok": False, "error": "not_found"}, status=404)

    def _incoming_webhook(self) -> None:
        """An incoming webhook (``POST /services/...``): JSON message, answered ``ok`` as text, like Slack.

        No token: the webhook URL itself is the secret.  The channel is the payload's, else
        ``#incoming-webhook``.
        """
        try:
            args = self._read_args()
            args.setdefault("channel", "#incoming-webhook")
            self.server.state.post(args)
        except SlackApiFailure as failure:
            self._send_text(failure.error, 400)
        except ValueError:
            self._send_text("invalid_payload", 400)
        else:
            self._send_text("ok", 200)

    def _send_text(self, body: str, status: int) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _api(self, method: str) -> None:
        state = self.server.state
        try:
            args = self._read_args()
            state.check_token(self._token(args))
            if method == "auth.test":
                body: dict[str, Any] = {
                    "url": f"http://{self.server.host}:{self.server.server_port}/",
                    "team": "regionops lab",
                    "user": "regionops",
                    "team_id": TEAM_ID,
                    "user_id": BOT_USER_ID,
                    "bot_id": BOT_ID,
                }
            elif method == "chat.postMessage":
                message = state.post(args)
                body = {"channel": message["channel"], "ts": message["ts"], "message": _public(message)}
            elif method == "chat.update":
                message = state.update(args)
                body = {
                    "channel": message["channel"],
                    "ts": message["ts"],
                    "text": message["text"],
                    "message": _public(message),
                }
            elif method == "conversations.replies":
                body = {"messages": [_public(m) for m in state.replies(args)], "has_more": False}
            else:
                raise SlackApiFailure("unknown_method")
        except SlackApiFailure as failure:
            log.debug("slack sink %s -> %s", method, failure.error)
            self._send_json({"ok": False, "error": failure.error})
        except ValueError:
            self._send_json({"ok": False, "error": "invalid_json"})
        else:
            self._send_json({"ok": True, **body})


def _public(message: dict[str, Any]) -> dict[str, Any]:
    """A stored message as the Web API shows it (no sink-only fields, no null thread_ts)."""
    shown = {k: v for k, v in message.items() if k not in ("history", "channel") and v is not None}
    return shown


class _SinkServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: SinkState):
        super().__init__(address, _Handler)
        self.host = address[0]
        self.state = state


class SlackSink:
    """The sink as an object: ``SlackSink(token=...).start()`` serves on a background thread.

    ``port=0`` picks a free port; :attr:`url` tells which once started.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        store_path: str | Path | None = None,
    ):
        self.host = host
        self.port = port
        self.state = SinkState(token=token, store_path=store_path)
        self._server: _SinkServer | None = None
        self._thread: threading.Thread | None = None

    def _bind(self) -> _SinkServer:
        if self._server is None:
            self._server = _SinkServer((self.host, self.port), self.state)
            self.port = self._server.server_address[1]
        return self._server

    @property
    def url(self) -> str:
        """Root URL, e.g. ``http://127.0.0.1:8123`` (read-back endpoints live here)."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The ``base_url`` to give ``slack_sdk.WebClient``: ``<url>/api/``."""
        return f"{self.url}/api/"

    def start(self) -> SlackSink:
        """Bind and serve on a daemon thread; returns self."""
        server = self._bind()
        if self._thread is None:
            self._thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="slack-sink", daemon=True
            )
            self._thread.start()
            log.info("slack sink listening on %s", self.url)
        return self

    def serve(self) -> None:
        """Bind and serve in the calling thread until interrupted (used by :func:`main`)."""
        server = self._bind()
        try:
            server.serve_forever(poll_interval=0.2)
        finally:
            server.server_close()
            self._server = None

    def stop(self) -> None:
        """Stop serving and release the port.  Safe to call twice."""
        if self._server is not None:
            if self._thread is not None:
                self._server.shutdown()
                self._thread.join(timeout=5)
            self._server.server_close()
        self._server = None
        self._thread = None

    def messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Current state of every message (in post order), optionally of one channel."""
        return self.state.messages(channel)

    def clear(self) -> None:
        """Forget every message."""
        self.state.clear()

    def __enter__(self) -> SlackSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_messages(base_url: str, channel: str | None = None, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Fetch ``GET /messages`` from a running sink.

    ``base_url`` is the sink's root URL; a Web API base URL ending in ``/api/`` works too.
    """
    root = base_url.rstrip("/").removesuffix("/api")
    url = f"{root}/messages"
    if channel:
        url += "?" + urllib.parse.urlencode({"channel": channel})
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - http(s) URL from config
        return json.loads(resp.read().decode("utf-8"))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: serve in the foreground until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m regionops.lab.slack_sink", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    parser.add_argument("--token-file", help="file holding the only token to accept (default: accept any)")
    parser.add_argument("--store", help="JSON-lines file to append every event to (replayed on start)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    token = Path(args.token_file).read_text().strip() if args.token_file else None
    sink = SlackSink(host=args.host, port=args.port, token=token, store_path=args.store)
    sink._bind()

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    print(f"slack sink listening on {sink.url} (api {sink.api_url})", flush=True)
    try:
        sink.serve()
    except KeyboardInterrupt:
        pass
    log.info("slack sink stopped")
    return 0


__all__ = ["SinkState", "SlackApiFailure", "SlackSink", "main", "read_messages", "read_store"]

if __name__ == "__main__":
    sys.exit(main())
