"""The local three-region environment: ``up`` (idempotent), ``status`` and ``down``.

Real services on loopback: PostgreSQL 15 (cluster core, created with primary eu-1 and
replicas us-1 and apac-1), moto's server for S3 and Route53 (its state kept on disk, see
:mod:`regionops.lab.awsserver`), a Slack-compatible sink, one web app per region and a
Prefect server with its UI.  The lab writes its own topology file; every runbook reads
the environment from that file, as it would a production one.

``up`` on an existing lab reconciles rather than re-initialises: the nodes keep their
roles, fenced nodes stay stopped, the writer record follows the node that really is
primary (:mod:`regionops.lab.reconcile`), and ``status`` judges the cluster with the same
assessment as the region-health runbook.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from regionops.drivers import pgbackrest
from regionops.drivers.cdn import cdn_for
from regionops.drivers.objectstore import objectstore_for
from regionops.drivers.postgres import NodeState, observer_for
from regionops.drivers.probes import prober_for
from regionops.drivers.traffic import traffic_for
from regionops.errors import ExternalSystemError, RunbookError
from regionops.ha.fencing import FenceStore, home_bucket
from regionops.ha.identity import IdentityStore
from regionops.ha.writer import writer_node
from regionops.health import RegionHealthReport, assess_health
from regionops.lab import monitoring as labmon
from regionops.lab import pglab
from regionops.lab.assets import assets_root, build_assets
from regionops.lab.config import (
    LAB_CLUSTER,
    LAB_DATABASE,
    LAB_NODES,
    LAB_REGIONS,
    LAB_ZONE,
    LabConfig,
)
from regionops.lab.processes import (
    http_ok,
    pid_alive,
    port_open,
    running_pid,
    spawn,
    stop,
    wait_for_port,
    wait_port_free,
)
from regionops.lab.reconcile import WriterReconcile, advice_for, reconcile_writer
from regionops.lab.tls import LabTls, serves_tls
from regionops.routing import ensure_app_traffic
from regionops.topology import Topology, default_lab_dir, load_topology
from regionops.waiting import poll_until

Progress = Callable[[str], None]
PRIORITIES = {"eu-1": 100, "us-1": 90, "apac-1": 80}
LAB_CDN = "regionops-lab-assets"  # the lab's CloudFront distribution, named by its comment
DEMO_VERSIONS = ("1.1.0", "1.2.0", "2.0.0-bad", "2.0.0-slow")  # assets pre-built for releases from the UI


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
                # Every TCP connection to a node needs it (scram-sha-256): runbooks, replication, apps.
                "password": {"file": str(cfg.pg_password_file)},
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
                    "pgbackrest": pgbackrest_section(cfg),
                    "copy_to": ["us"],
                    "fingerprint_tables": ["public.app_events", *pglab.SEED_TABLES],
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
        "aws": {"endpoint_url": f"https://127.0.0.1:{cfg.ports.moto}", "ca_bundle": str(LabTls(cfg.tls_dir).ca_file)},
        "prefect": {"ui_url": f"http://127.0.0.1:{cfg.ports.prefect}"},
        "drills": {"faults": {"driver": "lab", "lab_dir": str(cfg.lab_dir)}},
        **(
            {
                "alerting": {
                    "receiver_url": f"http://127.0.0.1:{cfg.ports.alerts}",
                    "token": {"file": str(cfg.path("secrets", "alert-token"))},
                }
            }
            if cfg.ports.alerts
            else {}
        ),
        "state_dir": str(cfg.path("state")),
        "application": {
            "name": "app",
            "release": {
                "target": "lab",
                "lab_dir": str(cfg.lab_dir),
                "canary_region": "eu",
                # /read feeds the error-rate gate: a 'bad' lab version fails it, not /health
                "probe_paths": ["/health", "/read?id=1"],
            },
            "assets": {
                "source": str(assets_root(cfg.lab_dir)) + "/{version}",
                "prefix": "static/",
                "cache_control": "public, max-age=60",
                "cdn_distribution": LAB_CDN,
            },
            "traffic": {"record": f"app.{LAB_ZONE}", "capacity_rps": {r: 200 for r in LAB_REGIONS}},
        },
        **({"monitoring": labmon.topology_section(cfg)} if labmon.enabled(cfg) else {}),
    }


def pgbackrest_section(cfg: LabConfig) -> dict[str, Any]:
    """The lab's pgBackRest settings: every path under the lab, small retention, an encrypted repository."""
    root = pglab.pgbackrest_dir(cfg)
    return {
        "repo_path": "/pgbackrest",
        "cipher_passphrase": {"file": str(cfg.path("secrets", "pgbackrest-cipher"))},
        "retention_full": 2,
        "retention_diff": 3,
        "process_max": 2,
        "config_dir": str(root / "conf"),
        "spool_dir": str(root / "spool"),
        "lock_dir": str(root / "lock"),
        "log_dir": str(root / "log"),
        "socket_dir": str(pglab.socket_dir(cfg)),
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
    cluster_healthy: bool = False  # region health's verdict on cluster core (roles, streaming, writer record)
    cluster: str | None = None  # that verdict as a sentence
    problems: list[str] = []  # every problem region health finds, named
    advice: list[str] = []  # what to run about them


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
    def up(
        self,
        progress: Progress = print,
        with_prefect: bool = True,
        with_monitoring: bool | None = None,
        with_workers: bool = False,
    ) -> LabStatus:
        """Start everything that is not running yet; create what does not exist yet.

        ``with_monitoring`` (default: as last time, initially on) runs Prometheus,
        Alertmanager, the Pushgateway and the exporters; they need the alert receiver,
        so without Prefect they are off (and stay off until asked for again).
        ``with_workers`` creates the regions' work pools and runs one process worker per
        region (`regionops lab up` does; the test fixtures start them where a test needs them).
        """
        cfg = self.cfg
        if with_monitoring is not None:
            cfg.monitoring = with_monitoring
        if not with_prefect:
            cfg.monitoring = False
        cfg.save()
        for sub in ("secrets", "state", "apps"):
            cfg.path(sub).mkdir(parents=True, exist_ok=True)
        pgbackrest.binary()  # a missing pgBackRest is named (with its package) before anything starts
        steps: list[tuple[str, Callable[[], None]]] = [
            ("topology file and TLS certificate", self._write_topology),
            # moto first: the fences (in the home bucket) say which nodes must stay stopped,
            # and the nodes archive their WAL into it as soon as they start.
            ("moto server (S3, Route53) over TLS", self._start_moto),
            (
                "PostgreSQL cluster core (WAL archived through pgBackRest)",
                lambda: pglab.ensure_cluster(
                    cfg,
                    lambda m: progress(f"      {m}"),
                    keep_stopped=self.fenced_nodes(),
                    archive=self._archive_settings,
                ),
            ),
            ("buckets and writer record", lambda: self._ensure_aws_resources(lambda m: progress(f"      {m}"))),
            ("pgBackRest stanza core", lambda: self._ensure_stanza(lambda m: progress(f"      {m}"))),
            ("Slack sink", self._start_slack_sink),
            ("regional apps", self._start_apps),
        ]
        if with_prefect:
            steps.append(("Prefect server and UI", self._start_prefect))
            steps.append(("runbook deployments served to the UI", self._start_serve))
            if with_workers:
                steps.append(
                    ("work pools, node-operation and runbook deployments, one worker per region", self.start_workers)
                )
            if cfg.ports.alerts:
                steps.append(("alert receiver (Alertmanager webhooks)", self._start_alert_receiver))
            if cfg.monitoring and cfg.ports.prometheus:
                steps.append(
                    (
                        "monitoring: postgres_exporter per node, Prometheus, Alertmanager, Pushgateway",
                        lambda: labmon.LabMonitoring(cfg).start(self._start_process, lambda m: progress(m)),
                    )
                )
        for i, (title, step) in enumerate(steps, 1):
            progress(f"[{i}/{len(steps)}] {title}")
            step()
        status = self.status()
        if status.cluster_healthy:
            # What node steps compare a data directory with when no member answers (regionops.ha.identity).
            IdentityStore.for_topology(self.topology()).record_healthy(LAB_CLUSTER, self.observe_nodes(), "lab up")
        return status

    def _write_topology(self) -> None:
        for name, value in (
            ("slack-token", "xoxb-lab-" + secrets.token_hex(12)),
            ("pgbackrest-cipher", secrets.token_urlsafe(32)),
            ("postgres-password", secrets.token_urlsafe(24)),
        ):
            secret_file = self.cfg.path("secrets", name)
            if not secret_file.exists():
                secret_file.write_text(value)
                secret_file.chmod(0o600)
        LabTls(self.cfg.tls_dir).ensure()
        self.cfg.topology_path.write_text(
            "# written by `regionops lab up`; production differs only by this file\n"
            + yaml.safe_dump(topology_document(self.cfg), sort_keys=False)
        )

    def _start_process(
        self, name: str, argv: list[str], port: int, timeout: float = 30, env: dict | None = None
    ) -> None:
        if running_pid(self.cfg.lab_dir, name) and port_open(port):
            return
        stop(self.cfg.lab_dir, name)
        pid = spawn(self.cfg.lab_dir, name, argv, env=env)
        wait_for_port(port, timeout=timeout, what=name, pid=pid, log=self.cfg.path("logs", f"{name}.log"))

    @property
    def aws_state_file(self) -> Path:
        """Where the S3/Route53 server keeps its state between runs (removed only by ``down --purge``)."""
        return self.cfg.path("aws", "s3-route53.state")

    def _start_moto(self) -> None:
        tls = LabTls(self.cfg.tls_dir)
        port = self.cfg.ports.moto
        if running_pid(self.cfg.lab_dir, "moto") and port_open(port) and not serves_tls(port, tls.ca_file):
            # A lab made before S3 served TLS: restart it (it saves its state on the way down).
            stop(self.cfg.lab_dir, "moto")
        self._start_process(
            "moto",
            [
                self.python,
                "-m",
                "regionops.lab.awsserver",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--state-file",
                str(self.aws_state_file),
                "--cert",
                str(tls.cert_file),
                "--key",
                str(tls.key_file),
            ],
            port,
        )

    def _archive_settings(self, node: str) -> dict[str, str]:
        topo = self.topology()
        plan = pgbackrest.plan_stanza(topo, LAB_CLUSTER)
        pgbackrest.write_config(topo, plan, node)  # archive_command names it: present before the node starts
        return pgbackrest.archive_settings(plan, node, pgbackrest.binary())

    def _ensure_stanza(self, progress: Progress = print) -> None:
        """Write every node's pgBackRest configuration and create the stanza from the primary."""
        topo = self.topology()
        plan = pgbackrest.plan_stanza(topo, LAB_CLUSTER)
        for node in LAB_NODES:
            pgbackrest.write_config(topo, plan, node)
        writable = pglab.writable_nodes(self.cfg)
        if len(writable) != 1:
            progress(f"not exactly one primary ({', '.join(writable) or 'none'}): stanza left as it is")
            return
        driver = pgbackrest.PgBackRest(plan, writable[0], pgbackrest.LocalRunner(self.cfg.os_user))
        progress(driver.stanza_create().sentence())
        progress(plan.sentence())

    def fenced_nodes(self) -> set[str]:
        """Nodes of cluster core fenced in the shared fence store (``up`` leaves them stopped)."""
        topo = self.topology()
        fences = FenceStore.for_topology(topo)
        if not fences.store.bucket_status(home_bucket(topo, LAB_CLUSTER)).reachable:
            return set()  # the first `up`: no home bucket yet, so nothing was ever fenced
        return set(fences.fenced(LAB_CLUSTER))

    def observe_nodes(self) -> dict[str, NodeState]:
        """Every node's state now (a stopped node is an unreachable state, not an error)."""
        observer = observer_for(connect_timeout=2)
        return {node: observer.observe(node, pglab.conninfo(self.cfg, node)) for node in LAB_NODES}

    def _ensure_aws_resources(self, progress: Progress = print) -> WriterReconcile:
        topo = self.topology()
        store = objectstore_for(topo)
        for region in topo.regions.values():
            store.ensure_bucket(region.bucket, region.aws_region)
        traffic = traffic_for(topo)
        traffic.ensure_zone(topo.traffic.route53_zone)
        # The nodes say which one is primary; the record follows them (and is left alone when
        # they disagree: the runbooks read it to tell which history is the right one).
        decision = reconcile_writer(self.observe_nodes(), writer_node(topo, LAB_CLUSTER, traffic), self.fenced_nodes())
        if decision.action == "point" and decision.primary:
            traffic.set_record(
                topo.traffic.route53_zone,
                topo.writer_record(LAB_CLUSTER),
                topo.node_dns_name(LAB_CLUSTER, decision.primary),
                ttl=topo.traffic.record_ttl,
            )
        home = topo.regions["eu"]
        cdn_for(topo).ensure_distribution(LAB_CDN, f"{home.bucket}.s3.{home.aws_region}.amazonaws.com")
        ensure_app_traffic(topo)  # latency records + health checks; drained regions stay drained
        progress(decision.sentence())
        return decision

    def _start_slack_sink(self) -> None:
        cfg = self.cfg
        self._start_process(
            "slack-sink",
            [
                self.python,
                "-m",
                "regionops.lab.slack_sink",
                "--host",
                "127.0.0.1",
                "--port",
                str(cfg.ports.slack),
                "--token-file",
                str(cfg.path("secrets", "slack-token")),
                "--store",
                str(cfg.path("slack-messages.jsonl")),
            ],
            cfg.ports.slack,
        )

    def _start_apps(self) -> None:
        cfg = self.cfg
        for version in (cfg.app_version, *DEMO_VERSIONS):
            build_assets(cfg.lab_dir, version)
        for region in cfg.ports.apps:
            self._start_app(region)

    def _start_app(self, region: str) -> None:
        cfg = self.cfg
        port = cfg.ports.apps[region]
        version_file = cfg.path("apps", region, "VERSION")
        if not version_file.exists():
            version_file.parent.mkdir(parents=True, exist_ok=True)
            version_file.write_text(cfg.app_version + "\n")
        self._start_process(
            f"app-{region}",
            [
                self.python,
                "-m",
                "regionops.lab.app",
                "--topology",
                str(cfg.topology_path),
                "--region",
                region,
                "--port",
                str(port),
                "--version-file",
                str(version_file),
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
        pid = spawn(
            self.cfg.lab_dir,
            name,
            [self.python, "-m", "deployments.serve", "--topology", str(self.cfg.topology_path)],
            env=env,
        )
        poll_until(lambda: self._serve_ready(pid), timeout=90, interval=0.5, what="runbook deployments")

    # -- regional workers ------------------------------------------------------------
    def worker_env(self, region: str) -> dict[str, str]:
        """A region's worker environment: its region, the topology, the API, the shared result storage."""
        return {
            "PREFECT_API_URL": f"http://127.0.0.1:{self.cfg.ports.prefect}/api",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "REGIONOPS_TOPOLOGY": str(self.cfg.topology_path),
            "REGIONOPS_REGION": region,
            # Poll every second: a node step should not wait 10 s for its worker.
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            # Node steps persist their typed results here; the runbooks read them back.
            "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(self.cfg.path("results")),
        }

    def start_workers(self, regions: list[str] | None = None, deploy: bool = True) -> None:
        """Pools and deployments (``deployments.workers``), then one process worker per region (idempotent)."""
        topo = self.topology()
        self.cfg.path("results").mkdir(parents=True, exist_ok=True)
        if deploy:
            out = subprocess.run(
                [self.python, "-m", "deployments.workers", "--topology", str(self.cfg.topology_path), "--runbooks"],
                env={**os.environ, **lab_env(self.cfg)},
                capture_output=True,
                text=True,
                timeout=300,
                cwd=str(Path(__file__).resolve().parents[2]),
            )
            if out.returncode != 0:
                raise ExternalSystemError("deploying to the work pools failed: " + out.stderr.strip()[-800:])
        prefect_bin = str(Path(self.python).parent / "prefect")
        started = []
        for region in regions or list(topo.regions):
            name = f"worker-{region}"
            if running_pid(self.cfg.lab_dir, name):
                continue
            pool = topo.regions[region].work_pool
            spawn(
                self.cfg.lab_dir,
                name,
                [prefect_bin, "worker", "start", "--pool", pool, "--type", "process", "--name", f"lab-{region}"],
                env=self.worker_env(region),
            )
            started.append(region)
        for region in started:
            poll_until(
                lambda r=region: self._worker_online(r),
                timeout=60,
                interval=0.5,
                what=f"the {region} worker to report to Prefect",
            )

    def stop_worker(self, region: str) -> bool:
        """Stop one region's worker (a gone worker, for tests and drills)."""
        return stop(self.cfg.lab_dir, f"worker-{region}")

    def worker_names(self) -> list[str]:
        """The lab's worker process names (whether running or not)."""
        return [f"worker-{r}" for r in LAB_REGIONS]

    def _worker_online(self, region: str) -> bool:
        pid = running_pid(self.cfg.lab_dir, f"worker-{region}")
        if pid is None:
            tail = self.cfg.path("logs", f"worker-{region}.log").read_text(errors="replace").splitlines()[-5:]
            raise ExternalSystemError(f"the {region} worker exited during start-up: " + " | ".join(tail))
        pool = self.topology().regions[region].work_pool
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.cfg.ports.prefect}/api/work_pools/{pool}/workers/filter",
            data=b"{}",
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=3) as resp:  # noqa: S310 - loopback URL we built
                workers = json.loads(resp.read())
        except (OSError, ValueError):
            return False
        return any(w.get("name") == f"lab-{region}" and w.get("status") == "ONLINE" for w in workers)

    def _start_alert_receiver(self) -> None:
        cfg = self.cfg
        token_file = cfg.path("secrets", "alert-token")
        if not token_file.exists():
            token_file.write_text(secrets.token_hex(16))
            token_file.chmod(0o600)
        self._start_process(
            "alert-receiver",
            [
                self.python,
                "-m",
                "deployments.alert_receiver",
                "--host",
                "127.0.0.1",
                "--port",
                str(cfg.ports.alerts),
                "--token-file",
                str(token_file),
                "--state-dir",
                str(cfg.path("state")),
                "--topology",
                str(cfg.topology_path),
                "--prefect-api-url",
                f"http://127.0.0.1:{cfg.ports.prefect}/api",
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
            f"http://127.0.0.1:{self.cfg.ports.prefect}/api/deployments/count",
            data=b"{}",
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=3) as resp:  # noqa: S310 - loopback URL we built
                return int(resp.read())
        except (OSError, ValueError):
            return 0

    def _prefect_healthy(self) -> bool:
        return http_ok(f"http://127.0.0.1:{self.cfg.ports.prefect}/api/health")

    def stop_process(self, name: str) -> bool:
        """Stop one lab process (``moto``, ``slack-sink``, ``app-eu``, ...): fault injection."""
        return stop(self.cfg.lab_dir, name)

    def set_app_version(self, region: str, version: str) -> None:
        """The lab's release target: write the region's VERSION file and restart its app with it."""
        self.cfg.path("apps", region, "VERSION").write_text(version + "\n")
        stop(self.cfg.lab_dir, f"app-{region}")
        if not wait_port_free(self.cfg.ports.apps[region], 10):
            # Something else answers on the app's port: a restart would "succeed" against it.
            raise ExternalSystemError(f"app-{region} stopped but port {self.cfg.ports.apps[region]} is still held")
        self._start_app(region)  # this region only: regions of one wave restart in parallel

    def ensure_processes(self) -> None:
        """Start again whatever non-PostgreSQL process is not running (after fault injection)."""
        self._start_moto()
        self._start_slack_sink()
        self._start_apps()

    # -- status -------------------------------------------------------------------
    def status(self) -> LabStatus:
        """Every component: running, healthy, and a detail line.

        The cluster, the apps, the buckets and the writer record are judged by region
        health's own assessment (:func:`regionops.health.assess_health`), so the lab calls
        itself healthy only when the runbooks would find it healthy.
        """
        cfg = self.cfg
        exists = cfg.config_path.exists()
        comps: list[ComponentStatus] = []
        topo = self.topology() if cfg.topology_path.exists() else None
        states = self.observe_nodes()
        fenced = self.fenced_nodes() if topo is not None else set()
        report = self._assess(topo, states, fenced) if topo is not None else None
        about = _problems_by_subject(report)
        split = report is not None and bool(
            report.problem_kinds() & {"no_primary", "multiple_primaries", "split_brain"}
        )
        for node, state in states.items():
            port = cfg.ports.postgres[node]
            problems = about.get(node, [])
            if split and state.role == "primary":
                problems = [*problems, f"{node} is one of several primaries"]
            running = port_open(port)
            detail = state.sentence() if state.reachable or running else "not running"
            if node in fenced:
                detail += "; fenced (left stopped until replica-resync)"
            comps.append(
                ComponentStatus(
                    name=f"postgres {node}",
                    endpoint=f"127.0.0.1:{port}",
                    running=running,
                    healthy=report is not None and state.reachable and not problems,
                    detail="; ".join([detail, *(p for p in problems if not p.startswith(f"node {node} ("))]),
                )
            )
        comps.append(self._moto_status(topo, report, about))
        slack_ok = http_ok(f"http://127.0.0.1:{cfg.ports.slack}/messages")
        comps.append(
            ComponentStatus(
                name="slack sink",
                endpoint=f"http://127.0.0.1:{cfg.ports.slack}/api/",
                running=port_open(cfg.ports.slack),
                healthy=slack_ok,
                detail="accepting messages" if slack_ok else "not answering",
            )
        )
        probes = {a.region: a for a in report.apps} if report else {}
        for region, port in cfg.ports.apps.items():
            problems = about.get(f"app {region}", [])
            probe = probes.get(region)
            ok = probe is not None and probe.healthy and not problems
            comps.append(
                ComponentStatus(
                    name=f"app {region}",
                    endpoint=f"http://127.0.0.1:{port}",
                    running=port_open(port),
                    healthy=ok,
                    detail="; ".join(problems) or (probe.sentence() if probe else "not probed"),
                )
            )
        prefect_ok = self._prefect_healthy()
        comps.append(
            ComponentStatus(
                name="prefect server",
                endpoint=f"http://127.0.0.1:{cfg.ports.prefect}",
                running=port_open(cfg.ports.prefect),
                healthy=prefect_ok,
                detail="UI and API answer" if prefect_ok else "not answering",
            )
        )
        if cfg.ports.alerts:
            alerts_ok = http_ok(f"http://127.0.0.1:{cfg.ports.alerts}/healthz")
            comps.append(
                ComponentStatus(
                    name="alert receiver",
                    endpoint=f"http://127.0.0.1:{cfg.ports.alerts}/alerts",
                    running=port_open(cfg.ports.alerts),
                    healthy=alerts_ok,
                    detail="accepting Alertmanager webhooks" if alerts_ok else "not answering",
                )
            )
        comps += [ComponentStatus(**vars(c)) for c in labmon.LabMonitoring(cfg).status()]
        serving = running_pid(cfg.lab_dir, "prefect-serve") is not None
        count = self._deployment_count() if prefect_ok else 0
        comps.append(
            ComponentStatus(
                name="runbook deployments",
                endpoint="prefect serve",
                running=serving,
                healthy=serving and count > 0,
                detail=f"{count} deployment(s) served" if serving else "not serving",
            )
        )
        for name in self.worker_names():
            pid = running_pid(cfg.lab_dir, name)
            if pid is not None:
                region = name.removeprefix("worker-")
                online = prefect_ok and self._worker_online(region)
                comps.append(
                    ComponentStatus(
                        name=f"worker {region}",
                        endpoint=topo.regions[region].work_pool if topo else "",
                        running=True,
                        healthy=online,
                        required=False,
                        detail=f"process worker of pool {topo.regions[region].work_pool if topo else '?'} "
                        f"(REGIONOPS_REGION={region}); " + ("online" if online else "not reporting"),
                    )
                )
        cluster_ok = report is not None and report.healthy
        stopped = [n for n in LAB_NODES if n not in fenced and not port_open(cfg.ports.postgres[n])]
        advice = (
            advice_for(report, reconcile_writer(states, report.writer.node, fenced), fenced, stopped) if report else []
        )
        return LabStatus(
            lab_dir=str(cfg.lab_dir),
            exists=exists,
            healthy=exists and cluster_ok and all(c.healthy for c in comps if c.required),
            components=comps,
            prefect_ui=f"http://127.0.0.1:{cfg.ports.prefect}",
            cluster_healthy=cluster_ok,
            cluster=report.sentence() if report else "no topology file",
            problems=[p.message for p in report.problems] if report else [],
            advice=advice,
        )

    def _assess(self, topo: Topology, states: dict[str, NodeState], fenced: set[str]) -> RegionHealthReport:
        """Region health's assessment of the lab as it is now (the same checks, not a copy of them)."""
        prober = prober_for(topo, timeout=2)
        apps = [prober.probe(region, r.app_url) for region, r in topo.regions.items()]
        buckets, record, error = [], None, None
        if port_open(self.cfg.ports.moto):
            store = objectstore_for(topo)
            buckets = [store.bucket_status(r.bucket) for r in topo.regions.values()]
            try:
                record = traffic_for(topo).get_record(topo.traffic.route53_zone, topo.writer_record(LAB_CLUSTER))
            except RunbookError as exc:
                error = str(exc)
        else:
            error = "moto (S3, Route53) is not running"
        return assess_health(topo, LAB_CLUSTER, states, apps, buckets, record, writer_error=error, fenced=fenced)

    def _moto_status(
        self, topo: Topology | None, report: RegionHealthReport | None, about: dict[str, list[str]]
    ) -> ComponentStatus:
        endpoint = f"https://127.0.0.1:{self.cfg.ports.moto}"
        running = port_open(self.cfg.ports.moto)
        if not running or topo is None or report is None:
            return ComponentStatus(
                name="moto (S3, Route53)",
                endpoint=endpoint,
                running=running,
                healthy=False,
                detail="not running" if not running else "no topology file",
            )
        subjects = [r.bucket for r in topo.regions.values()] + [topo.writer_record(LAB_CLUSTER)]
        bad = [p for s in subjects for p in about.get(s, [])]
        writer = report.writer
        detail = "; ".join(bad) if bad else f"{len(topo.regions)} buckets reachable"
        detail += f"; writer -> {writer.node or writer.target or 'missing'}"
        if self.aws_state_file.exists():
            detail += "; state kept on disk"
        return ComponentStatus(
            name="moto (S3, Route53)",
            endpoint=endpoint,
            running=True,
            healthy=not bad and len(report.buckets) == len(topo.regions),
            detail=detail,
        )

    # -- down ---------------------------------------------------------------------
    def down(self, progress: Progress = print, purge: bool = False) -> list[str]:
        """Stop every process the lab started; with ``purge`` remove its directory.

        Returns the ports still held afterwards (empty when all is well).
        """
        cfg = self.cfg
        names = [
            *self.worker_names(),
            *labmon.LabMonitoring(cfg).process_names(),
            "alert-receiver",
            "prefect-serve",
            "prefect-server",
            *(f"app-{r}" for r in cfg.ports.apps),
            "slack-sink",
        ]
        for name in names:
            if stop(cfg.lab_dir, name):
                progress(f"stopped {name}")
        # PostgreSQL before moto: a node's last WAL segments are archived to S3 as it stops.
        if cfg.pg_dir.exists():
            pglab.stop_cluster(cfg, progress)
        if stop(cfg.lab_dir, "moto"):
            progress("stopped moto")
        held = [f"{what} ({port})" for what, port in cfg.ports.all().items() if not wait_port_free(port, 10)]
        if purge:
            for path in {cfg.pg_dir, cfg.lab_dir}:
                if path.exists():
                    shutil.rmtree(path)
                    progress(f"removed {path}")
        return held


def _problems_by_subject(report: RegionHealthReport | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in report.problems if report else []:
        out.setdefault(p.subject, []).append(p.message)
    return out


def default_lab() -> Lab:
    """The lab in ``$REGIONOPS_LAB_DIR`` or ``./.lab``."""
    return Lab.open(default_lab_dir())


__all__ = ["Lab", "LabStatus", "ComponentStatus", "lab_env", "topology_document", "default_lab"]
