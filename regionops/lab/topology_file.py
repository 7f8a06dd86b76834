"""The lab's topology file: the environment every runbook reads, as a production topology would be.

Written by ``lab up`` from the lab's ports and directory (its secrets made once, beside
it); monitoring endpoints appear only when the monitoring stack runs.
"""

from __future__ import annotations

import secrets
from typing import Any

import yaml

from regionops.lab import monitoring as labmon
from regionops.lab import pglab, quorum
from regionops.lab.assets import assets_root
from regionops.lab.config import LAB_CLUSTER, LAB_DATABASE, LAB_NODES, LAB_REGIONS, LAB_ZONE, LabConfig
from regionops.lab.tls import LabTls

PRIORITIES = {"eu-1": 100, "us-1": 90, "apac-1": 80}
LAB_CDN = "regionops-lab-assets"  # the lab's CloudFront distribution, named by its comment


def bucket_name(region: str) -> str:
    """The lab bucket of a region."""
    return f"regionops-lab-{region}"


def topology_document(cfg: LabConfig) -> dict[str, Any]:
    """The lab's topology as a YAML-ready mapping."""
    return {
        "name": "lab",
        "regions": {
            region: {
                "aws_region": aws_region,
                "residency": region,
                "app_url": f"http://{cfg.region_host(region)}:{cfg.ports.apps[region]}",
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
                        "host": cfg.node_host(node),
                        "port": cfg.ports.postgres[node],
                        **({"netns": cfg.netns(region)} if cfg.netns(region) else {}),
                        "data_dir": str(cfg.data_dir(node)),
                        "priority": PRIORITIES[node],
                        **({"exporter_port": labmon.exporter_port(cfg, node)} if labmon.enabled(cfg) else {}),
                    }
                    for node, region in LAB_NODES.items()
                },
                "writer_record": f"writer.{LAB_CLUSTER}.{LAB_ZONE}",
                # As in production: node steps run on the node's region's executor (lab up starts one per region).
                "node_operator": "regional",
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
                "base_url": f"http://{cfg.control_host()}:{cfg.ports.slack}/api/",
            }
        },
        "aws": aws_section(cfg),
        **({"quorum": {"endpoints": quorum.endpoints(cfg)}} if cfg.ports.etcd else {}),
        "prefect": {"ui_url": f"http://{cfg.control_host()}:{cfg.ports.prefect}"},
        "drills": {"faults": {"driver": "lab", "lab_dir": str(cfg.lab_dir)}},
        **(
            {
                "alerting": {
                    "receiver_url": f"http://{cfg.control_host()}:{cfg.ports.alerts}",
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


def aws_section(cfg: LabConfig) -> dict[str, Any]:
    """moto on the backbone for Route53 and CloudFront; with a WAN, each region's buckets behind its own endpoint."""
    section: dict[str, Any] = {
        "endpoint_url": f"https://{cfg.backbone_host()}:{cfg.ports.moto}",
        "ca_bundle": str(LabTls(cfg.tls_dir).ca_file),
    }
    if cfg.wan_plan():
        port = cfg.ports.moto
        section["s3_endpoints"] = {aws: f"https://{cfg.region_host(r)}:{port}" for r, aws in LAB_REGIONS.items()}
    return section


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


def write_topology(cfg: LabConfig) -> None:
    """The lab's secrets (made once), its TLS certificate and its topology file."""
    for name, value in (
        ("slack-token", "xoxb-lab-" + secrets.token_hex(12)),
        ("pgbackrest-cipher", secrets.token_urlsafe(32)),
        ("postgres-password", secrets.token_urlsafe(24)),
    ):
        secret_file = cfg.path("secrets", name)
        if not secret_file.exists():
            secret_file.write_text(value)
            secret_file.chmod(0o600)
    LabTls(cfg.tls_dir, cfg.wan_addresses()).ensure()
    cfg.topology_path.write_text(
        "# written by `regionops lab up`; production differs only by this file\n"
        + yaml.safe_dump(topology_document(cfg), sort_keys=False)
    )
