"""The local three-region environment: ``up`` (idempotent), ``status`` and ``down``.

Real services on loopback: PostgreSQL 15 (cluster core, created with primary eu-1 and
replicas us-1 and apac-1), moto's server for S3 and Route53 (its state kept on disk, see
:mod:`regionops.lab.awsserver`), a Slack-compatible sink, one web app per region and a
Prefect server with its UI.  The lab writes its own topology file; every runbook reads
the environment from that file, as it would a production one.

:class:`Lab` is a facade over components (:mod:`regionops.lab.component`), each of
which starts, stops and reports one part: :mod:`~regionops.lab.cluster`,
:mod:`~regionops.lab.aws`, :mod:`~regionops.lab.services`, :mod:`~regionops.lab.apps`,
:mod:`~regionops.lab.prefect_server`, :mod:`~regionops.lab.monitoring` and
:mod:`~regionops.lab.workers`.

``up`` on an existing lab reconciles rather than re-initialises: the nodes keep their
roles, fenced nodes stay stopped, the writer record follows the node that really is
primary (:mod:`regionops.lab.reconcile`), and ``status`` judges the cluster with the same
assessment as the region-health runbook.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from regionops.drivers import pgbackrest
from regionops.drivers.objectstore import objectstore_for
from regionops.drivers.postgres import NodeState
from regionops.drivers.probes import prober_for
from regionops.drivers.traffic import traffic_for
from regionops.errors import RunbookError
from regionops.ha.identity import IdentityStore
from regionops.health import RegionHealthReport, assess_health
from regionops.lab.apps import LabApps
from regionops.lab.aws import LabAws
from regionops.lab.cluster import LabCluster
from regionops.lab.component import ComponentStatus, LabComponent, Observation, Progress
from regionops.lab.config import LAB_CLUSTER, LabConfig
from regionops.lab.executors import LabExecutors
from regionops.lab.monitoring import LabMonitoring
from regionops.lab.network import LabWan
from regionops.lab.prefect_db import LabPrefectDatabase
from regionops.lab.prefect_server import LabPrefect, LabRunbookServe, lab_env
from regionops.lab.processes import port_open, stop, wait_port_free
from regionops.lab.quorum import LabQuorum, etcd_binary
from regionops.lab.reconcile import advice_for, reconcile_writer
from regionops.lab.services import LabAlertReceiver, LabSlackSink
from regionops.lab.topology_file import LAB_CDN, topology_document, write_topology
from regionops.lab.workers import LabWorkers
from regionops.model.probes import BucketStatus, DnsRecord
from regionops.topology import Topology, default_lab_dir, load_topology


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
    """One lab, in one directory, with the ports recorded in its lab.json; its parts are components."""

    def __init__(self, cfg: LabConfig):
        self.cfg = cfg
        self.postgres = LabCluster(cfg)
        self.aws = LabAws(cfg, self.postgres)
        self.slack = LabSlackSink(cfg)
        self.apps = LabApps(cfg)
        self.prefect_db = LabPrefectDatabase(cfg)
        self.prefect = LabPrefect(cfg)
        self.alerts = LabAlertReceiver(cfg)
        self.monitoring = LabMonitoring(cfg)
        self.serve = LabRunbookServe(cfg)
        self.workers = LabWorkers(cfg)
        self.executors = LabExecutors(cfg)
        self.wan = LabWan(cfg)
        self.quorum = LabQuorum(cfg)

    @classmethod
    def open(cls, lab_dir: Path, base_port: int | None = None, free_ports: bool = False, wan: str | None = None) -> Lab:
        """The lab in ``lab_dir``: its saved config, or a new one (not yet started).

        ``wan`` (``off``, ``realistic``, ``scaled:F``; default: as made, initially off) may
        change an existing lab's delays, not whether its regions are namespaces.
        """
        cfg = LabConfig.load(lab_dir)
        if cfg is None:
            cfg = LabConfig.create(lab_dir, base_port, free_ports, wan=wan or "off")
        elif wan is not None:
            cfg.change_wan(wan)
        return cls(cfg)

    def components(self) -> list[LabComponent]:
        """Every component, in the order ``status`` reports them."""
        return [
            self.wan,
            self.quorum,
            self.postgres,
            self.aws,
            self.slack,
            self.apps,
            self.prefect_db,
            self.prefect,
            self.executors,
            self.alerts,
            self.monitoring,
            self.serve,
            self.workers,
        ]

    def topology(self) -> Topology:
        """The lab's topology, as its file says now."""
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
        etcd_binary()  # so is a missing etcd
        steps: list[tuple[str, Callable[[Progress], object]]] = [
            ("topology file and TLS certificate", lambda _: write_topology(cfg)),
        ]
        if cfg.wan_plan():
            steps.append((f"regions' networks and the WAN ({cfg.wan})", self.wan.start))
        steps += [
            # The quorum store before the nodes: it holds the fences that say which nodes must stay stopped.
            ("quorum store: one etcd member per region", self.quorum.start),
            # moto first: the fences (in the home bucket) say which nodes must stay stopped,
            # and the nodes archive their WAL into it as soon as they start.
            ("moto server (S3, Route53) over TLS", self.aws.start),
            ("PostgreSQL cluster core (WAL archived through pgBackRest)", self.postgres.start),
            ("buckets and writer record", self.aws.ensure_resources),
            ("pgBackRest stanza core", self.postgres.ensure_stanza),
            ("Slack sink", self.slack.start),
            ("regional apps", self.apps.start),
        ]
        if with_prefect:
            steps.append(("Prefect server's PostgreSQL database", self.prefect_db.start))
            steps.append(("Prefect server and UI", self.prefect.start))
            steps.append(("node-step executors, one per region", self.executors.start))
            steps.append(("runbook deployments served to the UI", self.serve.start))
            if with_workers:
                steps.append(("work pools and runbook deployments, one worker per region", self.workers.start))
            if cfg.ports.alerts:
                steps.append(("alert receiver (Alertmanager webhooks)", self.alerts.start))
            if cfg.monitoring and cfg.ports.prometheus:
                steps.append(
                    (
                        "monitoring: postgres_exporter per node, Prometheus, Alertmanager, Pushgateway",
                        self.monitoring.start,
                    )
                )
        for i, (title, step) in enumerate(steps, 1):
            progress(f"[{i}/{len(steps)}] {title}")
            step(progress)
        status = self.status()
        if status.cluster_healthy:
            # What node steps compare a data directory with when no member answers (regionops.ha.identity).
            IdentityStore.for_topology(self.topology()).record_healthy(LAB_CLUSTER, self.observe_nodes(), "lab up")
        return status

    def observe_nodes(self) -> dict[str, NodeState]:
        """Every node's state now (a stopped node is an unreachable state, not an error)."""
        return self.postgres.observe_nodes()

    def stop_process(self, name: str) -> bool:
        """Stop one lab process (``moto``, ``slack-sink``, ``app-eu``, ...): fault injection."""
        return stop(self.cfg.lab_dir, name)

    def ensure_processes(self) -> None:
        """Start again whatever non-PostgreSQL process is not running (after fault injection)."""
        for component in (self.aws, self.slack, self.apps):
            component.start(lambda _: None)

    # -- status -------------------------------------------------------------------
    def status(self) -> LabStatus:
        """Every component: running, healthy, and a detail line.

        The cluster, the apps, the buckets and the writer record are judged by region
        health's own assessment (:func:`regionops.health.assess_health`), so the lab calls
        itself healthy only when the runbooks would find it healthy.
        """
        cfg = self.cfg
        exists = cfg.config_path.exists()
        seen = self._observe()
        comps = [line for component in self.components() for line in component.status(seen)]
        report = seen.report
        cluster_ok = report is not None and report.healthy
        advice = (
            advice_for(
                report,
                reconcile_writer(seen.states, report.writer.node, seen.fenced),
                seen.fenced,
                self.postgres.stopped_nodes(seen.fenced),
            )
            if report
            else []
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

    def _observe(self) -> Observation:
        """The nodes, the fences and region health's report, once for every component's status."""
        states = self.observe_nodes()
        if not self.cfg.topology_path.exists():
            return Observation(states=states)
        topo = self.topology()
        fenced = self.postgres.fenced_nodes()
        return Observation(topo, states, fenced, self._assess(topo, states, fenced))

    def _assess(self, topo: Topology, states: dict[str, NodeState], fenced: set[str]) -> RegionHealthReport:
        """Region health's assessment of the lab as it is now (the same checks, not a copy of them)."""
        prober = prober_for(topo, timeout=2)
        apps = [prober.probe(region, r.app_url) for region, r in topo.regions.items()]
        buckets: list[BucketStatus] = []
        record: DnsRecord | None = None
        error = None
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

    # -- down ---------------------------------------------------------------------
    def down(self, progress: Progress = print, purge: bool = False) -> list[str]:
        """Stop every process the lab started; with ``purge`` remove its directory.

        Returns the ports still held afterwards (empty when all is well).
        """
        cfg = self.cfg
        # PostgreSQL before moto: a node's last WAL segments are archived to S3 as it stops.
        for component in (
            self.workers,
            self.executors,
            self.monitoring,
            self.alerts,
            self.serve,
            self.prefect,
            self.prefect_db,
            self.apps,
            self.slack,
            self.postgres,
            self.quorum,
            self.aws,
            self.wan,  # last: the namespaces go once nothing runs in them
        ):
            component.stop(progress)
        held = [f"{what} ({port})" for what, port in cfg.ports.all().items() if not wait_port_free(port, 10)]
        if purge:
            for path in {cfg.pg_dir, cfg.lab_dir}:
                if path.exists():
                    shutil.rmtree(path)
                    progress(f"removed {path}")
        return held


def default_lab() -> Lab:
    """The lab in ``$REGIONOPS_LAB_DIR`` or ``./.lab``."""
    return Lab.open(default_lab_dir())


__all__ = [
    "LAB_CDN",
    "ComponentStatus",
    "Lab",
    "LabStatus",
    "default_lab",
    "lab_env",
    "topology_document",
]
