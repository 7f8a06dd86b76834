"""The lab's AWS component: moto's server for S3, Route53 and CloudFront over TLS, and what lives in it.

The server keeps its state on disk (:mod:`regionops.lab.awsserver`), so the buckets, the
backups in them, the fences and the DNS records survive ``down`` and ``up``; only
``down --purge`` removes them.
"""

from __future__ import annotations

from pathlib import Path

from regionops.drivers.cdn import cdn_for
from regionops.drivers.objectstore import objectstore_for
from regionops.drivers.traffic import traffic_for
from regionops.ha.writer import writer_node
from regionops.lab.cluster import LabCluster
from regionops.lab.component import ComponentStatus, LabComponent, Observation, Progress, indented
from regionops.lab.config import LAB_CLUSTER, LabConfig
from regionops.lab.processes import port_open, running_pid, stop
from regionops.lab.reconcile import WriterReconcile, reconcile_writer
from regionops.lab.tls import LabTls, serves_tls
from regionops.lab.topology_file import LAB_CDN
from regionops.routing import ensure_app_traffic
from regionops.topology import load_topology


class LabAws(LabComponent):
    """moto's server: the regions' buckets, the writer record, the app's traffic records and the CDN."""

    def __init__(self, cfg: LabConfig, cluster: LabCluster):
        super().__init__(cfg)
        self.cluster = cluster  # the writer record follows the node that really is primary

    @property
    def state_file(self) -> Path:
        """Where the S3/Route53 server keeps its state between runs (removed only by ``down --purge``)."""
        return self.cfg.path("aws", "s3-route53.state")

    def process_names(self) -> list[str]:
        """The one server process."""
        return ["moto"]

    def start(self, progress: Progress) -> None:
        """Start the server over TLS (restarting one a lab older than TLS left running)."""
        tls = LabTls(self.cfg.tls_dir)
        port = self.cfg.ports.moto
        if running_pid(self.cfg.lab_dir, "moto") and port_open(port) and not serves_tls(port, tls.ca_file):
            # A lab made before S3 served TLS: restart it (it saves its state on the way down).
            stop(self.cfg.lab_dir, "moto")
        self.start_process(
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
                str(self.state_file),
                "--cert",
                str(tls.cert_file),
                "--key",
                str(tls.key_file),
            ],
            port,
        )

    def ensure_resources(self, progress: Progress) -> WriterReconcile:
        """Buckets, the zone, the writer record (pointed at the primary), the CDN and the app's traffic records."""
        topo = load_topology(self.cfg.topology_path)
        store = objectstore_for(topo)
        for region in topo.regions.values():
            store.ensure_bucket(region.bucket, region.aws_region)
        traffic = traffic_for(topo)
        traffic.ensure_zone(topo.traffic.route53_zone)
        # The nodes say which one is primary; the record follows them (and is left alone when
        # they disagree: the runbooks read it to tell which history is the right one).
        decision = reconcile_writer(
            self.cluster.observe_nodes(), writer_node(topo, LAB_CLUSTER, traffic), self.cluster.fenced_nodes()
        )
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
        indented(progress)(decision.sentence())
        return decision

    def status(self, seen: Observation) -> list[ComponentStatus]:
        """One line: the buckets reachable, where the writer record points, whether state is kept on disk."""
        endpoint = f"https://127.0.0.1:{self.cfg.ports.moto}"
        running = port_open(self.cfg.ports.moto)
        topo, report = seen.topology, seen.report
        if not running or topo is None or report is None:
            return [
                ComponentStatus(
                    name="moto (S3, Route53)",
                    endpoint=endpoint,
                    running=running,
                    healthy=False,
                    detail="not running" if not running else "no topology file",
                )
            ]
        subjects = [r.bucket for r in topo.regions.values()] + [topo.writer_record(LAB_CLUSTER)]
        bad = [p for s in subjects for p in seen.problems_about(s)]
        writer = report.writer
        detail = "; ".join(bad) if bad else f"{len(topo.regions)} buckets reachable"
        detail += f"; writer -> {writer.node or writer.target or 'missing'}"
        if self.state_file.exists():
            detail += "; state kept on disk"
        return [
            ComponentStatus(
                name="moto (S3, Route53)",
                endpoint=endpoint,
                running=True,
                healthy=not bad and len(report.buckets) == len(topo.regions),
                detail=detail,
            )
        ]
