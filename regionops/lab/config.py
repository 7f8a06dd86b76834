"""Where the lab lives and which ports it uses.  Persisted as ``lab.json`` in the lab directory."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
from pathlib import Path

from pydantic import BaseModel, Field

from regionops.drivers.pgtools import reachable_by
from regionops.errors import ConfigurationError
from regionops.lab.wan import OPS_SITE, WanPlan, WanProfile, parse_wan

# The lab's fixed shape: three regions, cluster core with one node per region.
LAB_REGIONS: dict[str, str] = {"eu": "eu-west-1", "us": "us-east-1", "apac": "ap-southeast-1"}
LAB_NODES: dict[str, str] = {"eu-1": "eu", "us-1": "us", "apac-1": "apac"}
LAB_PRIMARY = "eu-1"
LAB_CLUSTER = "core"
LAB_ZONE = "lab.regionops.internal."
LAB_DATABASE = "app"
DEFAULT_BASE_PORT = 15400
LOOPBACK = "127.0.0.1"


class LabPorts(BaseModel):
    """Every port the lab listens on (all on 127.0.0.1)."""

    postgres: dict[str, int]
    apps: dict[str, int]
    moto: int
    slack: int
    prefect: int
    alerts: int | None = None  # absent in labs created before the alert receiver joined
    prefect_db: int | None = None  # the Prefect server's PostgreSQL (absent in labs made before it)
    # Monitoring (absent in labs created before it joined): Prometheus, Alertmanager,
    # the Pushgateway and one postgres_exporter per node.
    prometheus: int | None = None
    alertmanager: int | None = None
    pushgateway: int | None = None
    exporters: dict[str, int] | None = None
    wan_relay: int | None = None  # the WAN relay (labs made with --wan other than off)
    # The quorum store: one etcd member per region, its client and its peer port (absent in labs made before it).
    etcd: dict[str, int] | None = None
    etcd_peers: dict[str, int] | None = None

    def all(self) -> dict[str, int]:
        """component name -> port, for status and for checking nothing is left after down."""
        ports = {f"postgres {n}": p for n, p in self.postgres.items()}
        ports |= {f"app {r}": p for r, p in self.apps.items()}
        ports |= {"moto": self.moto, "slack sink": self.slack, "prefect": self.prefect}
        ports |= {"prefect database": self.prefect_db} if self.prefect_db else {}
        ports |= {f"postgres_exporter {n}": p for n, p in (self.exporters or {}).items()}
        ports |= {
            name: port
            for name, port in (
                ("prometheus", self.prometheus),
                ("alertmanager", self.alertmanager),
                ("pushgateway", self.pushgateway),
            )
            if port
        }
        ports |= {"wan relay": self.wan_relay} if self.wan_relay else {}
        ports |= {f"etcd {r}": p for r, p in (self.etcd or {}).items()}
        ports |= {f"etcd {r} peers": p for r, p in (self.etcd_peers or {}).items()}
        return ports | ({"alert receiver": self.alerts} if self.alerts else {})

    @classmethod
    def from_base(cls, base: int) -> LabPorts:
        """Consecutive ports from ``base``: postgres, apps, moto, slack, prefect."""
        return cls(
            postgres={n: base + 32 + i for i, n in enumerate(LAB_NODES)},
            apps={r: base + 81 + i for i, r in enumerate(LAB_REGIONS)},
            moto=base + 90,
            slack=base + 91,
            prefect=base + 92,
            alerts=base + 93,
            prefect_db=base + 94,
            prometheus=base + 70,
            alertmanager=base + 71,
            pushgateway=base + 72,
            exporters={n: base + 75 + i for i, n in enumerate(LAB_NODES)},
            wan_relay=base + 60,
            etcd={r: base + 40 + i for i, r in enumerate(LAB_REGIONS)},
            etcd_peers={r: base + 45 + i for i, r in enumerate(LAB_REGIONS)},
        )

    @classmethod
    def free(cls) -> LabPorts:
        """Ports the kernel says are free right now (tests use these so they never collide)."""
        socks = []
        try:
            for _ in range(2 * len(LAB_NODES) + 3 * len(LAB_REGIONS) + 9):
                s = socket.socket()
                s.bind(("127.0.0.1", 0))
                socks.append(s)
            ports = [s.getsockname()[1] for s in socks]
        finally:
            for s in socks:
                s.close()
        it = iter(ports)
        return cls(
            postgres={n: next(it) for n in LAB_NODES},
            apps={r: next(it) for r in LAB_REGIONS},
            moto=next(it),
            slack=next(it),
            prefect=next(it),
            alerts=next(it),
            prefect_db=next(it),
            prometheus=next(it),
            alertmanager=next(it),
            pushgateway=next(it),
            exporters={n: next(it) for n in LAB_NODES},
            wan_relay=next(it),
            etcd={r: next(it) for r in LAB_REGIONS},
            etcd_peers={r: next(it) for r in LAB_REGIONS},
        )


class LabConfig(BaseModel):
    """The lab's directory, ports and the OS user that runs PostgreSQL."""

    lab_dir: Path
    ports: LabPorts
    os_user: str | None = Field(None, description="runs PostgreSQL when the lab is started as root")
    pg_root: Path | None = Field(None, description="where data directories live; default <lab_dir>/pg")
    app_version: str = "1.0.0"
    seed_rows: int = Field(1000, ge=0, description="customers seeded into the application database (5x orders)")
    monitoring: bool = Field(True, description="run Prometheus, Alertmanager, exporters (`lab up --no-monitoring`)")
    wan: str = Field("off", description="the WAN profile: off (loopback), realistic or scaled:F (`lab up --wan`)")
    wan_index: int | None = Field(None, description="this lab's slot on the host's WAN (namespaces ro<N>-*)")

    def wan_profile(self) -> WanProfile:
        """The lab's WAN profile (``off``: one loopback network, as labs were before regions had namespaces)."""
        return parse_wan(self.wan)

    def wan_plan(self) -> WanPlan | None:
        """The lab's namespaces and addresses, or None for a loopback lab."""
        if not self.wan_profile().namespaced or self.wan_index is None:
            return None
        return WanPlan(self.wan_index)

    def region_host(self, region: str) -> str:
        """The address a region's services listen on: its namespace's, or loopback."""
        plan = self.wan_plan()
        return plan.address(region) if plan else LOOPBACK

    def node_host(self, node: str) -> str:
        """The address a node listens on (its region's)."""
        return self.region_host(LAB_NODES[node])

    def netns(self, region: str) -> str | None:
        """The network namespace a region's (or the ops site's) processes run in (None for a loopback lab)."""
        plan = self.wan_plan()
        return plan.netns(region) if plan else None

    def backbone_host(self) -> str:
        """Where the host's shared services (the AWS backbone) listen so every region reaches them."""
        plan = self.wan_plan()
        return plan.backbone if plan else LOOPBACK

    def control_host(self) -> str:
        """Where every lab process reaches the control plane (Prefect's API, Slack, monitoring): the ops site.

        In a lab with a WAN that is the ops site's address, so a region's calls to it cross
        the WAN (and a partition cuts them); the host, the operator's VPN, reaches it directly.
        """
        plan = self.wan_plan()
        return plan.address(OPS_SITE) if plan else LOOPBACK

    def control_ports(self) -> list[int]:
        """The ports of the control plane's services (those this lab has)."""
        p = self.ports
        ports = [p.prefect, p.slack, p.alerts, p.prometheus, p.alertmanager, p.pushgateway]
        return [port for port in ports if port]

    def wan_addresses(self) -> tuple[str, ...]:
        """Every address of the lab's WAN (the backbone's and each site's), or none for a loopback lab."""
        plan = self.wan_plan()
        return (plan.backbone, *(plan.address(r) for r in plan.sites)) if plan else ()

    @property
    def wan_state_path(self) -> Path:
        """The WAN's conditions now (profile, partitions, degraded regions): the relay follows this file."""
        return self.path("state", "wan.json")

    @property
    def topology_path(self) -> Path:
        return self.lab_dir / "topology.yaml"

    @property
    def config_path(self) -> Path:
        return self.lab_dir / "lab.json"

    def path(self, *parts: str) -> Path:
        """A path inside the lab directory."""
        return self.lab_dir.joinpath(*parts)

    @property
    def pg_password_file(self) -> Path:
        """The password of the nodes' runbook and replication user (the topology refers to this file)."""
        return self.path("secrets", "postgres-password")

    def pg_password(self) -> str | None:
        """That password (None for a lab made before the nodes required one)."""
        path = self.pg_password_file
        return path.read_text().strip() if path.exists() else None

    @property
    def pg_dir(self) -> Path:
        """Parent of the data directories (outside the lab dir when its OS user cannot reach it)."""
        return self.pg_root or self.lab_dir / "pg"

    @property
    def tls_dir(self) -> Path:
        """The lab CA and S3 server certificate.

        Beside the data directories when PostgreSQL's user cannot reach the lab dir.
        """
        return (self.pg_root or self.lab_dir) / "tls"

    def data_dir(self, node: str) -> Path:
        return self.pg_dir / node

    def save(self) -> None:
        """Write lab.json (so status and down find the same ports later)."""
        self.lab_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.model_dump_json(indent=2))

    @classmethod
    def load(cls, lab_dir: Path) -> LabConfig | None:
        """The saved config of the lab in ``lab_dir``, or None if no lab was set up there."""
        path = lab_dir / "lab.json"
        if not path.exists():
            return None
        cfg = cls.model_validate(json.loads(path.read_text()))
        if cfg.ports.etcd is None or cfg.ports.etcd_peers is None:
            # A lab made before the quorum store: its members get ports the kernel says are
            # free now, kept from the next `lab up` on (which saves the config and starts them).
            free = LabPorts.free()
            cfg.ports.etcd, cfg.ports.etcd_peers = free.etcd, free.etcd_peers
        return cfg

    @classmethod
    def create(
        cls, lab_dir: Path, base_port: int | None = None, free_ports: bool = False, wan: str = "off"
    ) -> LabConfig:
        """A new config: free ports, consecutive ports from ``base_port``, or the defaults; ``wan`` its WAN profile."""
        profile = parse_wan(wan)
        ports = LabPorts.free() if free_ports else LabPorts.from_base(base_port or DEFAULT_BASE_PORT)
        os_user = "postgres" if os.geteuid() == 0 else None
        lab_dir = lab_dir.absolute()
        pg_root = None
        if not reachable_by(os_user, lab_dir):
            # e.g. a checkout under /root: PostgreSQL's user cannot traverse it, so the data
            # directories live in a per-lab directory under the system temp dir instead.
            digest = hashlib.sha1(str(lab_dir).encode()).hexdigest()[:10]
            pg_root = Path(tempfile.gettempdir()) / f"regionops-lab-pg-{digest}"
        index = None
        if profile.namespaced:
            from regionops.lab.wan import free_index, require_tools

            require_tools()
            index = free_index()
        return cls(lab_dir=lab_dir, ports=ports, os_user=os_user, pg_root=pg_root, wan=profile.name, wan_index=index)

    def change_wan(self, wan: str) -> None:
        """Move this lab to another WAN profile; a loopback lab cannot gain namespaces (nor lose them) in place."""
        new, old = parse_wan(wan), self.wan_profile()
        if new.namespaced != old.namespaced:
            raise ConfigurationError(
                f"the lab in {self.lab_dir} was made with --wan {old.name}; its servers listen on "
                f"{'region namespaces' if old.namespaced else 'loopback'}, so it cannot become --wan {new.name} "
                f"in place: `regionops lab down --purge`, then `regionops lab up --wan {new.name}`"
            )
        self.wan = new.name
