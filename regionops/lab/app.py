"""The regional web application of the lab: health, version, metrics, one write and one read endpoint.

Writes go to whichever node the cluster's writer DNS record points at (read from
Route53, as a real app would resolve DNS), so a failover's DNS switch moves writes.
Reads go to the node in the app's own region.  The version comes from a file that the
release runbook replaces, read once at start (a process runs one version until it is
restarted, as a deployed binary does).

A version whose name marks it broken misbehaves, so the release runbook's gates and
rollback are exercised for real: ``bad`` in the name makes ``/read`` and ``/write``
answer 500 while ``/health`` stays green (the classic release that passes its health
check and fails its users); ``slow`` in the name makes every answer but ``/metrics``
take ``SLOW_SECONDS``.

    python -m regionops.lab.app --topology T --region eu --port 15481 --version-file F
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from regionops.drivers.postgres import SqlNode, sql_node_for
from regionops.drivers.traffic import traffic_for
from regionops.errors import RunbookError
from regionops.lab.app_metrics import AppMetrics
from regionops.topology import Topology, load_topology

log = logging.getLogger(__name__)
WRITER_CACHE_SECONDS = 0.2
SLOW_SECONDS = 0.3
BROKEN_ENDPOINTS = frozenset({"/read", "/write"})


def misbehaviour(version: str) -> str | None:
    """How a version misbehaves in the lab: ``"errors"``, ``"slow"`` or None (a good version)."""
    name = version.lower()
    if "bad" in name:
        return "errors"
    if "slow" in name:
        return "slow"
    return None


class RegionalApp:
    """The app's logic, independent of HTTP, so it can be exercised directly."""

    def __init__(self, topology: Topology, region: str, version_file: Path):
        self.topology = topology
        self.region = region
        self.version_file = version_file
        self.cluster_name, self.cluster = topology.cluster(None)
        self.local_node = next(n for n, node in self.cluster.nodes.items() if node.region == region)
        self.traffic = traffic_for(topology)
        self._writer: tuple[float, str | None] = (0.0, None)
        self._lock = threading.Lock()
        self.metrics = AppMetrics(region)
        self._version = self._read_version()
        self.misbehaviour = misbehaviour(self._version)

    def _read_version(self) -> str:
        try:
            return self.version_file.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def version(self) -> str:
        """The version this process was started with."""
        return self._version

    def broken(self, path: str) -> tuple[int, dict[str, Any]] | None:
        """The answer a misbehaving version gives instead of the real one (None: serve normally)."""
        if self.misbehaviour == "slow" and path != "/metrics":
            time.sleep(SLOW_SECONDS)
        if self.misbehaviour == "errors" and path in BROKEN_ENDPOINTS:
            return 500, {"error": f"version {self._version} is broken (lab: 'bad' in the version name)"}
        return None

    def writer_node(self) -> str | None:
        """The node the writer record points at (cached for a fraction of a second)."""
        with self._lock:
            fetched_at, node = self._writer
            if time.monotonic() - fetched_at < WRITER_CACHE_SECONDS:
                return node
        record = self.traffic.get_record(
            self.topology.traffic.route53_zone, self.topology.writer_record(self.cluster_name)
        )
        node = self.topology.node_for_dns_name(self.cluster_name, record.values[0]) if record else None
        with self._lock:
            self._writer = (time.monotonic(), node)
        return node

    def _sql(self, node: str) -> SqlNode:
        return sql_node_for(self.cluster, node, connect_timeout=2)

    def health(self) -> tuple[int, dict[str, Any]]:
        """200 with status ok, or degraded (still 200: the app serves) naming what is wrong."""
        body: dict[str, Any] = {"region": self.region, "version": self.version(), "node": self.local_node}
        body["database"] = "ok" if self._sql(self.local_node).ping() else "unreachable"
        body["status"] = "ok" if body["database"] == "ok" else "degraded"
        return 200, body

    def write(self, payload: str) -> tuple[int, dict[str, Any]]:
        """Insert one row through the writer record; 201 with id, LSN and node, or 503."""
        try:
            node = self.writer_node()
            if node is None:
                return 503, {"error": "writer record does not point at a node of the cluster"}
            rows = self._sql(node).query(
                "INSERT INTO app_events (region, payload) VALUES (%s, %s) "
                "RETURNING id, pg_current_wal_insert_lsn()::text AS lsn",
                (self.region, payload),
            )
            return 201, {"id": rows[0]["id"], "lsn": rows[0]["lsn"], "node": node}
        except RunbookError as exc:
            return 503, {"error": str(exc)}

    def read(self, row_id: int) -> tuple[int, dict[str, Any]]:
        """Read one row from the node in this region."""
        try:
            rows = self._sql(self.local_node).query(
                "SELECT id, region, payload, created_at::text AS created_at FROM app_events WHERE id = %s",
                (row_id,),
            )
        except RunbookError as exc:
            return 503, {"error": str(exc)}
        if not rows:
            return 404, {"error": f"no row {row_id} on {self.local_node}"}
        return 200, rows[0] | {"node": self.local_node}


def make_handler(app: RegionalApp) -> type[BaseHTTPRequestHandler]:
    """An HTTP handler class bound to ``app``."""

    class Handler(BaseHTTPRequestHandler):
        _started = 0.0

        def _send(self, status: int, body: dict[str, Any]) -> None:
            self._send_bytes(status, json.dumps(body, default=str).encode(), "application/json")

        def _send_bytes(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            app.metrics.observe(self.command, urlparse(self.path).path, status, time.perf_counter() - self._started)

        def handle_one_request(self) -> None:
            self._started = time.perf_counter()
            super().handle_one_request()

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            url = urlparse(self.path)
            failure = app.broken(url.path)
            if failure is not None:
                self._send(*failure)
            elif url.path == "/metrics":
                app.metrics.set_version(app.version())
                self._send_bytes(200, app.metrics.render(), app.metrics.content_type)
            elif url.path == "/health":
                self._send(*app.health())
            elif url.path == "/version":
                self._send(200, {"version": app.version(), "region": app.region})
            elif url.path == "/read":
                ids = parse_qs(url.query).get("id", [])
                if not ids or not ids[0].isdigit():
                    self._send(400, {"error": "read needs ?id=<integer>"})
                else:
                    self._send(*app.read(int(ids[0])))
            else:
                self._send(404, {"error": f"no such endpoint {url.path}"})

        def do_POST(self) -> None:  # noqa: N802
            failure = app.broken(urlparse(self.path).path)
            if failure is not None:
                self._send(*failure)
                return
            if urlparse(self.path).path != "/write":
                self._send(404, {"error": f"no such endpoint {self.path}"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                self._send(400, {"error": "body is not JSON"})
                return
            self._send(*app.write(str(body.get("payload", ""))))

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug(format, *args)

    return Handler


def main() -> None:
    """Run one regional app in the foreground."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--version-file", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    app = RegionalApp(load_topology(args.topology), args.region, Path(args.version_file))
    server = ThreadingHTTPServer((args.host, args.port), make_handler(app))
    server.daemon_threads = True
    log.info("app for region %s listening on %s:%s", args.region, args.host, args.port)
    server.serve_forever()


if __name__ == "__main__":
    main()
