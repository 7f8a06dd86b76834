"""The lab's monitoring stack: one postgres_exporter per node, Prometheus, Alertmanager, Pushgateway.

Short lab intervals (scrape every 2 s as production does, evaluate every second, every
alert's ``for`` capped at two seconds except where a rule's ``min_for`` says more, no
group wait on the runbook route) so that a killed primary reaches the alert receiver
within seconds.  Not 1 s scrapes: postgres_exporter (0.11) answers a scrape of a
database that refuses connections after about a second, so a 1 s scrape timeout would
turn a crash into a failed scrape, the slow "unreachable" condition.  The configuration is the shipped one generated for
the lab's topology (:mod:`regionops.monitoring.files`) and lives in ``<lab>/monitoring``.

When a binary is missing, ``lab up`` says which Debian package provides it and starts
the rest of the lab; the topology then names no monitoring endpoints (runbooks neither
publish metrics nor silence alerts), and ``lab status`` lists the stack as not
installed without counting it against the lab's health.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

from regionops.errors import ConfigurationError
from regionops.lab.component import ComponentStatus, LabComponent, Observation, Progress
from regionops.lab.config import LAB_NODES, LabConfig
from regionops.lab.processes import http_ok, port_open, running_pid
from regionops.monitoring import EXPORTER_QUERIES
from regionops.monitoring.alertmanager import LAB_TIMINGS
from regionops.monitoring.files import AlertmanagerInputs, render, write
from regionops.monitoring.tools import (
    ALERTMANAGER,
    LAB_TOOLS,
    POSTGRES_EXPORTER,
    PROMETHEUS,
    PUSHGATEWAY,
    Tool,
    missing_tools,
    packages_for,
)
from regionops.topology import load_topology
from regionops.waiting import poll_until

LAB_SCRAPE_SECONDS = 2.0
LAB_EVALUATION_SECONDS = 1.0
LAB_MAX_FOR_SECONDS = 2.0
HOST = "127.0.0.1"


def enabled(cfg: LabConfig) -> bool:
    """Whether this lab runs the stack: asked for, ports allocated, and every binary installed."""
    return bool(
        cfg.monitoring and cfg.ports.prometheus and cfg.ports.alerts and cfg.ports.exporters and not missing_tools()
    )


def topology_section(cfg: LabConfig) -> dict[str, Any] | None:
    """The lab topology's ``monitoring:`` mapping, or None when the stack does not run."""
    if not enabled(cfg):
        return None
    p = cfg.ports
    ops = cfg.control_host()  # the stack listens on the host; runbooks reach it at the ops site
    return {
        "prometheus_url": f"http://{ops}:{p.prometheus}",
        "alertmanager_url": f"http://{ops}:{p.alertmanager}",
        "pushgateway_url": f"http://{ops}:{p.pushgateway}",
        "alert_receiver_url": f"http://{HOST}:{p.alerts}/alerts",
        "scrape_interval_seconds": LAB_SCRAPE_SECONDS,
        "max_alert_for_seconds": LAB_MAX_FOR_SECONDS,
    }


def exporter_port(cfg: LabConfig, node: str) -> int | None:
    """The port of ``node``'s postgres_exporter when the stack runs."""
    return cfg.ports.exporters[node] if enabled(cfg) and cfg.ports.exporters else None


def _binary(tool: Tool) -> str:
    """The path of an installed tool (``start`` checked that every one is)."""
    path = tool.find()
    if path is None:
        raise ConfigurationError(tool.missing())
    return path


def _post(url: str) -> None:
    req = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=5):  # noqa: S310 - loopback URL we built
        pass


class LabMonitoring(LabComponent):
    """Writes the lab's monitoring config and starts, reports and names its processes."""

    @property
    def dir(self) -> Path:
        """Where the stack's configuration and data live."""
        return self.cfg.path("monitoring")

    def process_names(self) -> list[str]:
        """Every process this stack may have started (for ``lab down``)."""
        return ["prometheus", "alertmanager", "pushgateway", *(f"postgres-exporter-{n}" for n in LAB_NODES)]

    def write_config(self) -> list[Path]:
        """Generate prometheus.yml, the rules (``for`` capped) and alertmanager.yml for the lab."""
        topology = load_topology(self.cfg.topology_path)
        files = render(
            topology,
            str(self.cfg.topology_path),
            AlertmanagerInputs(
                receiver_token_file=str(self.cfg.path("secrets", "alert-token")),
                slack_token_file=str(self.cfg.path("secrets", "slack-token")),
                slack_api_url=f"http://{HOST}:{self.cfg.ports.slack}/api/chat.postMessage",
                timings=LAB_TIMINGS,
            ),
            evaluation_interval=LAB_EVALUATION_SECONDS,
        )
        return write(self.dir, files)

    def start(self, progress: Progress) -> None:
        """Start whatever is not running; reload the running servers' (re)generated config."""
        missing = missing_tools()
        if missing:
            progress("      skipped: " + "; ".join(t.missing() for t in missing))
            progress(
                f"      install with: apt-get install {' '.join(packages_for(missing))}; the rest of the lab "
                "runs without monitoring"
            )
            return
        p = self.cfg.ports
        assert p.prometheus and p.alertmanager and p.pushgateway and p.exporters
        self.write_config()
        self.start_exporters(list(p.exporters))
        data = self.dir / "data"
        self.start_process(
            "pushgateway",
            [
                _binary(PUSHGATEWAY),
                f"--web.listen-address={HOST}:{p.pushgateway}",
                f"--persistence.file={data / 'pushgateway.metrics'}",
                "--persistence.interval=5s",
            ],
            p.pushgateway,
        )
        reload = self._running("alertmanager", p.alertmanager)
        self.start_process(
            "alertmanager",
            [
                _binary(ALERTMANAGER),
                f"--config.file={self.dir / 'alertmanager.yml'}",
                f"--storage.path={data / 'alertmanager'}",
                f"--web.listen-address={HOST}:{p.alertmanager}",
                f"--web.external-url=http://{HOST}:{p.alertmanager}",
                "--cluster.listen-address=",  # no gossip port: one Alertmanager
            ],
            p.alertmanager,
        )
        if reload:
            _post(f"http://{HOST}:{p.alertmanager}/-/reload")
        reload = self._running("prometheus", p.prometheus)
        self.start_process(
            "prometheus",
            [
                _binary(PROMETHEUS),
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={data / 'prometheus'}",
                "--storage.tsdb.retention.time=2d",
                f"--web.listen-address={HOST}:{p.prometheus}",
                f"--web.external-url=http://{HOST}:{p.prometheus}",
                "--web.enable-lifecycle",
                # Re-send firing alerts every second (default 1 min): an alert lost while
                # Alertmanager was starting must not wait a minute.
                "--rules.alert.resend-delay=1s",
            ],
            p.prometheus,
        )
        if reload:
            _post(f"http://{HOST}:{p.prometheus}/-/reload")
        # `up` returns once Prometheus has scraped every target at least once, so a fault
        # injected right after it is seen against a known steady state.
        poll_until(
            lambda: self._targets()[0] > 0 and self._targets()[1] == 0,
            timeout=60,
            interval=0.5,
            what="Prometheus to scrape every target once",
        )

    def start_exporters(self, nodes: list[str]) -> None:
        """Start the postgres_exporter of each of ``nodes`` that is not running (beside its node)."""
        p = self.cfg.ports
        if not p.exporters or missing_tools():
            return
        for node, port in ((n, p.exporters[n]) for n in nodes):
            # Beside its node, as in production: in a lab with a WAN, inside the node's region,
            # where Prometheus's scrape target (the node's host) names it.
            host = self.cfg.node_host(node)
            self.start_process(
                f"postgres-exporter-{node}",
                [
                    _binary(POSTGRES_EXPORTER),
                    f"--web.listen-address={host}:{port}",
                    f"--extend.query-path={EXPORTER_QUERIES}",
                    # The lab's rules need only pg_up and the custom queries: keep 1 s scrapes cheap.
                    "--disable-default-metrics",
                    "--disable-settings-metrics",
                    "--no-collector.database",
                    "--no-collector.bgwriter",
                    "--log.level=warn",
                ],
                port,
                # The password in the exporter's environment, never on its command line.
                env={
                    "DATA_SOURCE_NAME": f"postgresql://postgres:{quote(self.cfg.pg_password() or '', safe='')}"
                    f"@{host}:{p.postgres[node]}/postgres?sslmode=disable&connect_timeout=2"
                },
                region=LAB_NODES[node],
                host=host,
            )

    def _targets(self) -> tuple[int, int, int]:
        """(targets, not yet scraped, down) as Prometheus reports them; (0, -1, 0) when it does not answer."""
        try:
            with urllib.request.urlopen(
                f"http://{HOST}:{self.cfg.ports.prometheus}/api/v1/targets",  # noqa: S310
                timeout=3,
            ) as resp:
                targets = json.loads(resp.read())["data"]["activeTargets"]
        except (OSError, ValueError, KeyError):
            return 0, -1, 0
        unscraped = sum(1 for t in targets if t.get("lastScrape", "").startswith("0001-"))
        down = sum(1 for t in targets if t.get("health") == "down")
        return len(targets), unscraped, down

    def _running(self, name: str, port: int) -> bool:
        return running_pid(self.cfg.lab_dir, name) is not None and port_open(port)

    def status(self, seen: Observation) -> list[ComponentStatus]:
        """One component per process; when binaries are missing, one line naming the packages."""
        cfg, p = self.cfg, self.cfg.ports
        if not (cfg.monitoring and p.prometheus and p.alertmanager and p.pushgateway and p.exporters):
            return []
        missing = missing_tools(LAB_TOOLS)
        if missing:
            return [
                ComponentStatus(
                    name="monitoring",
                    endpoint="-",
                    running=False,
                    healthy=False,
                    required=False,
                    detail="not installed: apt-get install " + " ".join(packages_for(missing)),
                )
            ]
        comps = []
        for node, port in p.exporters.items():
            url = f"http://{cfg.node_host(node)}:{port}/metrics"
            ok = _exporter_sees_database(url)
            comps.append(
                ComponentStatus(
                    name=f"postgres_exporter {node}",
                    endpoint=url,
                    running=port_open(port, cfg.node_host(node)),
                    healthy=ok is not None,
                    detail=("not answering" if ok is None else "pg_up 1" if ok else "pg_up 0 (database unreachable)"),
                )
            )
        for name, port, health, ui in (
            ("prometheus", p.prometheus, "/-/ready", "UI"),
            ("alertmanager", p.alertmanager, "/-/ready", "UI"),
            ("pushgateway", p.pushgateway, "/-/ready", "UI"),
        ):
            ok = http_ok(f"http://{HOST}:{port}{health}")
            detail = f"ready; {ui} at http://{HOST}:{port}" if ok else "not answering"
            if ok and name == "prometheus":
                total, unscraped, down = self._targets()
                detail += f"; {total - down} of {total} targets up" + (
                    f", {unscraped} not scraped yet" if unscraped > 0 else ""
                )
            comps.append(
                ComponentStatus(
                    name=name, endpoint=f"http://{HOST}:{port}", running=port_open(port), healthy=ok, detail=detail
                )
            )
        return comps


def _exporter_sees_database(url: str) -> bool | None:
    """pg_up of an exporter (True/False), or None when the exporter does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 - loopback URL we built
            text = resp.read().decode("utf-8", "replace")
    except OSError:
        return None
    return any(line.strip() == "pg_up 1" for line in text.splitlines())
