"""The local three-region environment: ``up`` (idempotent), ``status`` and ``down``.

Real services on loopback: PostgreSQL 15 (cluster core, primary eu-1, replicas us-1 and
apac-1), moto's server for S3 and Route53, a Slack-compatible sink, one web app per
region and a Prefect server with its UI.  The lab writes its own topology file; every
runbook reads the environment from that file, as it would a production one.
"""

from __future__ import annotations

import secrets
import shutil
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from regionops.drivers.objectstore import objectstore_for
from regionops.drivers.postgres import SqlObserver
from regionops.drivers.traffic import traffic_for
from regionops.lab import monitoring as labmon
from regionops.lab import pglab
from regionops.lab.config import (
    LAB_CLUSTER,
    LAB_DATABASE,
    LAB_NODES,
    LAB_PRIMARY,
    LAB_REGIONS,
    LAB_ZONE,
    LabConfig,
)
from regionops.errors import ExternalSystemError
from regionops.lab.processes import (
    pid_alive,
    port_open,
    running_pid,
    spawn,
    stop,
    wait_for_port,
    wait_port_free,
)
from regionops.topology import Topology, default_lab_dir, load_topology
from regionops.waiting import poll_until

Progress = Callable[[str], None]
PRIORITIES = {"eu-1": 100, "us-1": 90, "apac-1": 80}


def bucket_name(region: str) -> str:
    """The lab bucket of a region."""
    return f"regionops-lab-{region}"


def lab_env(cfg: LabConfig) -> dict[str, str]:
    """Environment for processes that talk to the lab's Prefect server."""
    return {
        "PREFECT_API_URL": f"http://127.0.0.1:{cfg.ports.prefect}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "REGIONOPS_TOPOLOGY": str(cfg.topology_path),
        "REGIONOPS_LAB_DIR": str(cfg.lab_dir),
    }


def topology_document(cfg: LabConfig) -> dict[str, Any]:
    """The lab's topology as a YAML-ready mapping."""
    return {
        "name": "lab",
        "regions": {
            region: {
                "aws_region": aws_region,
                "residency": region,
                "app_url": f"http://127.0.0.1:{cfg.ports.apps[region]}",
                "bucket": bucket_name(region),
                "work_pool": f"regionops-{region}",
            }
            for region, aws_region in LAB_REGIONS.items()
        },
        "clusters": {
            LAB_CLUSTER: {
                "residency": "global",
                "database": LAB_DATABASE,
                "user": pglab.SUPERUSER,
                "replication_user": pglab.SUPERUSER,
                "os_user": cfg.os_user,
                "nodes": {
                    node: {
                        "region": region,
                        "host": pglab.HOST,
                        "port": cfg.ports.postgres[node],
                        "data_dir": str(cfg.data_dir(node)),
                        "priority": PRIORITIES[node],
                        **({"exporter_port": labmon.exporter_port(cfg, node)} if labmon.enabled(cfg) else {}),
                    }
                    for node, region in LAB_NODES.items()
                },
                "writer_record": f"writer.{LAB_CLUSTER}.{LAB_ZONE}",
                "objectives": {"rto_seconds": 30, "rpo_seconds": 5},
                "health": {"max_lag_bytes": 4 * 1024 * 1024, "max_lag_seconds": 30},
                "backup": {
                    "retention": {"keep_last": 3, "max_age_days": 7},
                    "copy_to": ["us"],
                    "fingerprint_tables": ["public.app_events"],
                },
            }
        },
        "traffic": {"route53_zone": LAB_ZONE, "record_ttl": 5},
        "notifications": {
            "slack": {
                "channel": "#regionops-lab",
                "token": {"file": str(cfg.path("secrets", "slack-token"))},
                "base_url": f"http://127.0.0.1:{cfg.ports.slack}/api/",
            }
        },
        "aws": {"endpoint_url": f"http://127.0.0.1:{cfg.ports.moto}"},
        "prefect": {"ui_url": f"http://127.0.0.1:{cfg.ports.prefect}"},
        "state_dir": str(cfg.path("state")),
        **({"monitoring": labmon.topology_section(cfg)} if labmon.enabled(cfg) else {}),
    }


class ComponentStatus(BaseModel):
    """One line of ``lab status``."""

    name: str
    endpoint: str
    running: bool
    healthy: bool
    detail: str
    required: bool = True  # False: reported, but the lab is healthy without it (monitoring not installed)


class LabStatus(BaseModel):
    """The whole lab: healthy when every component is."""

    lab_dir: str
    exists: bool
    healthy: bool
    components: list[ComponentStatus]
    prefect_ui: str | None = None


class Lab:
    """One lab, in one directory, with the ports recorded in its lab.json."""

    def __init__(self, cfg: LabConfig):
        self.cfg = cfg

    @classmethod
    def open(cls, lab_dir: Path, base_port: int | None = None, free_ports: bool = False) -> Lab:
        """The lab in ``lab_dir``: its saved config, or a new one (not yet started)."""
        cfg = LabConfig.load(lab_dir) or LabConfig.create(lab_dir, base_port, free_ports)
        return cls(cfg)

    @property
    def python(self) -> str:
        return sys.executable

    def topology(self) -> Topology:
        return load_topology(self.cfg.topology_path)

    # -- up -----------------------------------------------------------------------
    def up(self, progress: Progress = print, with_prefect: bool = True,
           with_monitoring: bool | None = None) -> LabStatus:
        """Start everything that is not running yet; create what does not exist yet.

        ``with_monitoring`` (default: as last time, initially on) runs Prometheus,
        Alertmanager, the Pushgateway and the exporters; they need the alert receiver,
        so without Prefect they are off (and stay off until asked for again).
        """
        cfg = self.cfg
        if with_monitoring is not None:
            cfg.monitoring = with_monitoring
        if not with_prefect:
            cfg.monitoring = False
        cfg.save()
        for sub in ("secrets", "state", "apps"):
            cfg.path(sub).mkdir(parents=True, exist_ok=True)
        steps: list[tuple[str, Callable[[], None]]] = [
            ("topology file", self._write_topology),
            ("PostgreSQL cluster core", lambda: pglab.ensure_cluster(cfg, lambda m: progress(f"      {m}"))),
            ("moto server (S3, Route53)", self._start_moto),
            ("buckets and writer record", self._ensure_aws_resources),
            ("Slack sink", self._start_slack_sink),
            ("regional apps", self._start_apps),
        ]
        if with_prefect:
            steps.append(("Prefect server and UI", self._start_prefect))
            steps.append(("runbook deployments served to the UI", self._start_serve))
            if cfg.ports.alerts:
                steps.append(("alert receiver (Alertmanager webhooks)", self._start_alert_receiver))
            if cfg.monitoring and cfg.ports.prometheus:
                steps.append(("monitoring: postgres_exporter per node, Prometheus, Alertmanager, Pushgateway",
                              lambda: labmon.LabMonitoring(cfg).start(self._start_process,
                                                                      lambda m: progress(m))))
        for i, (title, step) in enumerate(steps, 1):
            progress(f"[{i}/{len(steps)}] {title}")
            step()
        return self.status()

    def _write_topology(self) -> None:
        token_file = self.cfg.path("secrets", "slack-token")
        if not token_file.exists():
            token_file.write_text("xoxb-lab-" + secrets.token_hex(12))
            token_file.chmod(0o600)
        self.cfg.topology_path.write_text(
            "# written by `regionops lab up`; production differs only by this file\n"
            + yaml.safe_dump(topology_document(self.cfg), sort_keys=False)
        )

    def _start_process(self, name: str, argv: list[str], port: int, timeout: float = 30, env: dict | None = None) -> None:
        if running_pid(self.cfg.lab_dir, name) and port_open(port):
            return
        stop(self.cfg.lab_dir, name)
        pid = spawn(self.cfg.lab_dir, name, argv, env=env)
        wait_for_port(port, timeout=timeout, what=name, pid=pid, log=self.cfg.path("logs", f"{name}.log"))

    def _start_moto(self) -> None:
        self._start_process(
            "moto", [self.python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.cfg.ports.moto)],
            self.cfg.ports.moto,
        )

    def _ensure_aws_resources(self) -> None:
        topo = self.topology()
        store = objectstore_for(topo)
        for region in topo.regions.values():
            store.ensure_bucket(region.bucket, region.aws_region)
        traffic = traffic_for(topo)
        traffic.ensure_zone(topo.traffic.route53_zone)
        record = topo.writer_record(LAB_CLUSTER)
        # Only the first `up` points the writer at eu-1: after a failover it stays where it is.
        if traffic.get_record(topo.traffic.route53_zone, record) is None:
            traffic.set_record(
                topo.traffic.route53_zone, record, topo.node_dns_name(LAB_CLUSTER, LAB_PRIMARY),
                ttl=topo.traffic.record_ttl,
            )

    def _start_slack_sink(self) -> None:
        cfg = self.cfg
        self._start_process(
            "slack-sink",
            [
                self.python, "-m", "regionops.lab.slack_sink", "--host", "127.0.0.1",
                "--port", str(cfg.ports.slack), "--token-file", str(cfg.path("secrets", "slack-token")),
                "--store", str(cfg.path("slack-messages.jsonl")),
            ],
            cfg.ports.slack,
        )

    def _start_apps(self) -> None:
        cfg = self.cfg
        for region, port in cfg.ports.apps.items():
            version_file = cfg.path("apps", region, "VERSION")
            if not version_file.exists():
                version_file.parent.mkdir(parents=True, exist_ok=True)
                version_file.write_text(cfg.app_version + "\n")
            self._start_process(
                f"app-{region}",
                [
                    self.python, "-m", "regionops.lab.app", "--topology", str(cfg.topology_path),
                    "--region", region, "--port", str(port), "--version-file", str(version_file),
                ],
                port,
            )

    def _start_prefect(self) -> None:
        cfg = self.cfg
        prefect_bin = str(Path(self.python).parent / "prefect")
        env = {
            "PREFECT_HOME": str(cfg.path("prefect")),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_API_URL": f"http://127.0.0.1:{cfg.ports.prefect}/api",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
        self._start_process(
            "prefect-server",
            [prefect_bin, "server", "start", "--host", "127.0.0.1", "--port", str(cfg.ports.prefect)],
            cfg.ports.prefect,
            timeout=120,
            env=env,
        )
        poll_until(self._prefect_healthy, timeout=120, interval=0.5, what="Prefect server health")

    def _start_serve(self) -> None:
        name = "prefect-serve"
        if running_pid(self.cfg.lab_dir, name):
            return
        # Poll for runs every second: an alert-started failover should not wait 10 s to begin.
        env = lab_env(self.cfg) | {"PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
        pid = spawn(self.cfg.lab_dir, name,
                    [self.python, "-m", "deployments.serve", "--topology", str(self.cfg.topology_path)], env=env)
        poll_until(lambda: self._serve_ready(pid), timeout=90, interval=0.5, what="runbook deployments")

    def _start_alert_receiver(self) -> None:
        cfg = self.cfg
        token_file = cfg.path("secrets", "alert-token")
        if not token_file.exists():
            token_file.write_text(secrets.token_hex(16))
            token_file.chmod(0o600)
        self._start_process(
            "alert-receiver",
            [
                self.python, "-m", "deployments.alert_receiver", "--host", "127.0.0.1", "--port", str(cfg.ports.alerts),
                "--token-file", str(token_file), "--state-dir", str(cfg.path("state")),
                "--topology", str(cfg.topology_path),
                "--prefect-api-url", f"http://127.0.0.1:{cfg.ports.prefect}/api",
            ],
            cfg.ports.alerts,
            timeout=60,
        )

    def _serve_ready(self, pid: int) -> bool:
        if not pid_alive(pid):
            log = self.cfg.path("logs", "prefect-serve.log").read_text(errors="replace").splitlines()[-5:]
            raise ExternalSystemError("prefect-serve exited during start-up: " + " | ".join(log))
        return self._deployment_count() > 0

    def _deployment_count(self) -> int:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.cfg.ports.prefect}/api/deployments/count", data=b"{}", method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=3) as resp:  # noqa: S310 - loopback URL we built
                return int(resp.read())
        except (OSError, ValueError):
            return 0

    def _prefect_healthy(self) -> bool:
        return _http_ok(f"http://127.0.0.1:{self.cfg.ports.prefect}/api/health")

    def stop_process(self, name: str) -> bool:
        """Stop one lab process (``moto``, ``slack-sink``, ``app-eu``, ...): fault injection."""
        return stop(self.cfg.lab_dir, name)

    def ensure_processes(self) -> None:
        """Start again whatever non-PostgreSQL process is not running (after fault injection)."""
        self._start_moto()
        self._start_slack_sink()
        self._start_apps()

    # -- status -------------------------------------------------------------------
    def status(self) -> LabStatus:
        """Every component: running, healthy, and a detail line."""
        cfg = self.cfg
        exists = cfg.config_path.exists()
        comps: list[ComponentStatus] = []
        topo = self.topology() if cfg.topology_path.exists() else None
        observer = SqlObserver(connect_timeout=2)
        for node in LAB_NODES:
            port = cfg.ports.postgres[node]
            up = port_open(port)
            detail = "not running"
            healthy = False
            if up:
                state = observer.observe(node, pglab.conninfo(cfg, node))
                detail = state.sentence()
                healthy = state.reachable and (
                    state.role == "primary"
                    or bool(state.wal_receiver and state.wal_receiver.status == "streaming")
                )
            comps.append(ComponentStatus(name=f"postgres {node}", endpoint=f"127.0.0.1:{port}", running=up,
                                         healthy=healthy, detail=detail))
        comps.append(self._moto_status(topo))
        slack_ok = _http_ok(f"http://127.0.0.1:{cfg.ports.slack}/messages")
        comps.append(ComponentStatus(name="slack sink", endpoint=f"http://127.0.0.1:{cfg.ports.slack}/api/",
                                     running=port_open(cfg.ports.slack), healthy=slack_ok,
                                     detail="accepting messages" if slack_ok else "not answering"))
        for region, port in cfg.ports.apps.items():
            ok = _http_ok(f"http://127.0.0.1:{port}/health")
            comps.append(ComponentStatus(name=f"app {region}", endpoint=f"http://127.0.0.1:{port}",
                                         running=port_open(port), healthy=ok,
                                         detail="health endpoint answers" if ok else "not answering"))
        prefect_ok = self._prefect_healthy()
        comps.append(ComponentStatus(name="prefect server", endpoint=f"http://127.0.0.1:{cfg.ports.prefect}",
                                     running=port_open(cfg.ports.prefect), healthy=prefect_ok,
                                     detail="UI and API answer" if prefect_ok else "not answering"))
        if cfg.ports.alerts:
            alerts_ok = _http_ok(f"http://127.0.0.1:{cfg.ports.alerts}/healthz")
            comps.append(ComponentStatus(name="alert receiver", endpoint=f"http://127.0.0.1:{cfg.ports.alerts}/alerts",
                                         running=port_open(cfg.ports.alerts), healthy=alerts_ok,
                                         detail="accepting Alertmanager webhooks" if alerts_ok else "not answering"))
        comps += [ComponentStatus(**vars(c)) for c in labmon.LabMonitoring(cfg).status()]
        serving = running_pid(cfg.lab_dir, "prefect-serve") is not None
        count = self._deployment_count() if prefect_ok else 0
        comps.append(ComponentStatus(name="runbook deployments", endpoint="prefect serve", running=serving,
                                     healthy=serving and count > 0,
                                     detail=f"{count} deployment(s) served" if serving else "not serving"))
        return LabStatus(
            lab_dir=str(cfg.lab_dir), exists=exists, healthy=exists and all(c.healthy for c in comps if c.required),
            components=comps, prefect_ui=f"http://127.0.0.1:{cfg.ports.prefect}",
        )

    def _moto_status(self, topo: Topology | None) -> ComponentStatus:
        endpoint = f"http://127.0.0.1:{self.cfg.ports.moto}"
        running = port_open(self.cfg.ports.moto)
        if not running or topo is None:
            return ComponentStatus(name="moto (S3, Route53)", endpoint=endpoint, running=running, healthy=False,
                                   detail="not running" if not running else "no topology file")
        store = objectstore_for(topo)
        bad = [s.sentence() for s in (store.bucket_status(r.bucket) for r in topo.regions.values()) if not s.reachable]
        record = traffic_for(topo).get_record(topo.traffic.route53_zone, topo.writer_record(LAB_CLUSTER))
        detail = "; ".join(bad) if bad else f"{len(topo.regions)} buckets reachable"
        detail += f"; writer -> {record.values[0] if record else 'missing'}"
        return ComponentStatus(name="moto (S3, Route53)", endpoint=endpoint, running=True,
                               healthy=not bad and record is not None, detail=detail)

    # -- down ---------------------------------------------------------------------
    def down(self, progress: Progress = print, purge: bool = False) -> list[str]:
        """Stop every process the lab started; with ``purge`` remove its directory.

        Returns the ports still held afterwards (empty when all is well).
        """
        cfg = self.cfg
        names = [*labmon.LabMonitoring(cfg).process_names(), "alert-receiver", "prefect-serve", "prefect-server", *(f"app-{r}" for r in cfg.ports.apps),
                 "slack-sink", "moto"]
        for name in names:
            if stop(cfg.lab_dir, name):
                progress(f"stopped {name}")
        if cfg.pg_dir.exists():
            pglab.stop_cluster(cfg, progress)
        held = [f"{what} ({port})" for what, port in cfg.ports.all().items() if not wait_port_free(port, 10)]
        if purge:
            for path in {cfg.pg_dir, cfg.lab_dir}:
                if path.exists():
                    shutil.rmtree(path)
                    progress(f"removed {path}")
        return held


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback URL we built
            return 200 <= resp.status < 300
    except OSError:
        return False


def default_lab() -> Lab:
    """The lab in ``$REGIONOPS_LAB_DIR`` or ``./.lab``."""
    return Lab.open(default_lab_dir())


__all__ = ["Lab", "LabStatus", "ComponentStatus", "lab_env", "topology_document", "default_lab"]
