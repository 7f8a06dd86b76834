"""Manifest, layout, residency and source choice: the pure parts of backups."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from regionops.backup.manifest import (
    BackupManifest,
    RecoveryTarget,
    StoredObject,
    backup_prefix,
    home_region,
    human_bytes,
    new_backup_id,
    volume_key,
)
from regionops.backup.residency import check_all, check_backup_region
from regionops.backup.source import choose_source
from regionops.drivers.postgres import NodeState, WalReceiver
from regionops.errors import ConfigurationError, PreconditionFailed, ResidencyViolation
from regionops.lsn import Lsn
from regionops.topology import HealthThresholds, parse_topology

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def topology(residency="eu", copy_to=()):
    regions = {
        name: {"aws_region": aws, "residency": zone, "app_url": f"http://{name}", "bucket": f"b-{name}",
               "work_pool": name}
        for name, aws, zone in [("eu", "eu-west-1", "eu"), ("eu2", "eu-central-1", "eu"), ("us", "us-east-1", "us")]
    }
    return parse_topology({
        "name": "t",
        "regions": regions,
        "clusters": {"core": {
            "residency": residency,
            "nodes": {
                "eu-1": {"region": "eu", "host": "h1", "port": 5432, "data_dir": "/d1", "priority": 100},
                "eu-2": {"region": "eu2", "host": "h2", "port": 5432, "data_dir": "/d2", "priority": 90},
            },
            "writer_record": "w.core.db.example.com",
            "backup": {"copy_to": list(copy_to)},
        }},
        "traffic": {"route53_zone": "db.example.com"},
    })


def manifest(**overrides) -> BackupManifest:
    data = dict(
        backup_id="20260102T030405Z", cluster="core", topology="t", source_node="us-1", source_role="replica",
        home_region="eu", server_version=150018, system_identifier="7", timeline=1,
        start_lsn="0/5000060", end_lsn="0/6000000", started_at=NOW, finished_at=NOW,
        size_before=int(1.2 * 1024 ** 3), size_after=310 * 1024 ** 2, compression="zstd", pg_manifest=True,
        objects=[StoredObject(key="k", kind="base", size=1, sha256="0" * 64)],
        recovery_target=RecoveryTarget(kind="name", name="rp", lsn=Lsn.parse("0/6000100")),
    )
    return BackupManifest.model_validate(data | overrides)


def test_manifest_sentence_and_round_trip():
    m = manifest()
    assert m.sentence() == "backup 20260102T030405Z of core from us-1: 1.2 GiB → 310.0 MiB zstd, 0/5000060..0/6000000"
    again = BackupManifest.model_validate_json(m.model_dump_json())
    assert again == m and again.end_lsn == Lsn.parse("0/6000000")


def test_layout_and_ids():
    assert new_backup_id(NOW) == "20260102T030405Z"
    assert backup_prefix("core", "X") == "backups/core/X/"
    assert volume_key("core", "X", "zstd", 2) == "backups/core/X/base.tar.zst.002"
    assert volume_key("core", "X", "none", 0) == "backups/core/X/base.tar.000"
    assert human_bytes(1536) == "1.5 KiB"


def test_recovery_targets_become_settings():
    assert RecoveryTarget(kind="name", name="rp").settings() == {"recovery_target_name": "rp"}
    assert RecoveryTarget(kind="immediate").settings() == {"recovery_target": "immediate"}


def test_home_region_is_the_highest_priority_nodes():
    topo = topology()
    assert home_region(topo, topo.clusters["core"]) == "eu"


def test_residency_allows_a_region_in_the_same_zone():
    assert check_backup_region(topology(), "core", "eu2", "copy").bucket == "b-eu2"


def test_residency_refuses_naming_the_rule():
    with pytest.raises(ResidencyViolation) as err:
        check_all(topology(), "core", ["eu2", "us"], "copy of backup X")
    message = str(err.value)
    assert "region us" in message and "residency zone 'us'" in message
    assert "clusters.core.residency = [eu]" in message and "nothing was copied" in message


def test_residency_global_allows_everything_and_unknown_region_is_a_config_error():
    assert check_backup_region(topology(residency="global"), "core", "us", "copy").bucket == "b-us"
    with pytest.raises(ConfigurationError, match="unknown region 'mars'"):
        check_backup_region(topology(), "core", "mars", "copy")


def state(node, role, *, streaming=True, lag=0.0, reachable=True, lsn="0/5000000"):
    return NodeState(
        node=node, reachable=reachable, role=role if reachable else "unknown", observed_at=NOW,
        error=None if reachable else "down",
        current_lsn=lsn if role == "primary" else None, replay_lsn=lsn if role == "replica" else None,
        replay_lag_seconds=lag if role == "replica" else None,
        wal_receiver=WalReceiver(status="streaming" if streaming else "stopping") if role == "replica" else None,
    )


def lab_like():
    return parse_topology({
        "name": "t",
        "regions": {r: {"aws_region": "x", "residency": r, "app_url": "u", "bucket": f"b-{r}", "work_pool": r}
                    for r in ("eu", "us", "apac")},
        "clusters": {"core": {"nodes": {
            "eu-1": {"region": "eu", "host": "h", "port": 1, "data_dir": "/1", "priority": 100},
            "us-1": {"region": "us", "host": "h", "port": 2, "data_dir": "/2", "priority": 90},
            "apac-1": {"region": "apac", "host": "h", "port": 3, "data_dir": "/3", "priority": 80},
        }, "writer_record": "w.core.z.example"}},
        "traffic": {"route53_zone": "z.example"},
    }).clusters["core"]


def test_source_is_the_best_healthy_replica():
    states = {"eu-1": state("eu-1", "primary"), "us-1": state("us-1", "replica"),
              "apac-1": state("apac-1", "replica")}
    choice = choose_source(lab_like(), states, HealthThresholds(), bucket_region="eu")
    assert (choice.node, choice.role) == ("us-1", "replica")
    choice = choose_source(lab_like(), states, HealthThresholds(), bucket_region="apac")
    assert choice.node == "apac-1"  # the replica in the bucket's region wins


def test_source_skips_unhealthy_replicas_and_falls_back_to_the_primary():
    states = {"eu-1": state("eu-1", "primary"), "us-1": state("us-1", "replica", streaming=False),
              "apac-1": state("apac-1", "replica", lag=999)}
    choice = choose_source(lab_like(), states, HealthThresholds(max_lag_seconds=30), bucket_region="eu")
    assert choice.node == "eu-1" and "no healthy replica" in choice.reason
    assert "us-1 not streaming" in choice.reason and "apac-1 999 s behind" in choice.reason


def test_source_requested_must_be_reachable_and_nothing_reachable_is_refused():
    states = {"eu-1": state("eu-1", "primary", reachable=False), "us-1": state("us-1", "replica", reachable=False),
              "apac-1": state("apac-1", "replica", reachable=False)}
    with pytest.raises(PreconditionFailed, match="requested source us-1 is unreachable"):
        choose_source(lab_like(), states, HealthThresholds(), bucket_region="eu", requested="us-1")
    with pytest.raises(PreconditionFailed, match="no node can serve a backup"):
        choose_source(lab_like(), states, HealthThresholds(), bucket_region="eu")
