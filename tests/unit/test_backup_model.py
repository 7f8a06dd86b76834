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
from regionops.drivers.postgres import NodeState, WalReceiver
from regionops.errors import ConfigurationError, PreconditionFailed, ResidencyViolation
from regionops.lsn import Lsn
from regionops.topology import parse_topology

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


# --- restore onto a node: the plan from the node's disk facts, and what the seam ships -------


def disk(node="eu-2", **kw):
    from regionops.backup.restore_model import RestoreDiskFacts

    return RestoreDiskFacts.model_validate(
        dict(node=node, data_dir="/d2", free_bytes=10 * 1024 ** 3, running=False, has_data=True) | kw)


def test_restore_plan_takes_the_disk_facts_read_on_the_nodes_host():
    from regionops.backup.restore import plan_restore

    states = {"eu-1": state("eu-1", "primary"), "eu-2": state("eu-2", "replica", reachable=False)}
    plan = plan_restore(topology(), "core", "eu-2", manifest(), "b-eu", states, disk(running=True))
    assert (plan.role, plan.primary, plan.node_running, plan.node_has_data) == ("replica", "eu-1", True, True)
    assert (plan.staging_dir, plan.old_dir) == ("/d2.restore-20260102T030405Z", "/d2.pre-restore-20260102T030405Z")
    with pytest.raises(PreconditionFailed, match="has 1.0 GiB free; restoring backup .* needs about 1.3 GiB"):
        plan_restore(topology(), "core", "eu-2", manifest(), "b-eu", states, disk(free_bytes=1024 ** 3))


def test_a_restore_step_refuses_a_plan_for_another_nodes_directory_and_ships_as_json():
    from regionops.backup.restore import plan_restore
    from regionops.backup.restore_model import StageRequest
    from regionops.node.local import LocalNodeOperator
    from regionops.node.messages import NodeOpParams

    states = {"eu-1": state("eu-1", "primary"), "eu-2": state("eu-2", "replica", reachable=False)}
    plan = plan_restore(topology(), "core", "eu-2", manifest(), "b-eu", states, disk())
    op = LocalNodeOperator(topology(), "core")
    op._require_own_plan("eu-2", plan)  # its own: passes
    with pytest.raises(PreconditionFailed, match="refusing to restore onto eu-1: the plan names eu-2"):
        op._require_own_plan("eu-1", plan)
    moved = plan.model_copy(update={"staging_dir": "/d1"})
    with pytest.raises(PreconditionFailed, match="nothing was changed"):
        op._require_own_plan("eu-2", moved)
    step = NodeOpParams(topology=topology(), cluster="core", node="eu-2", operation="restore-stage",
                        stage=StageRequest(plan=plan, manifest=manifest()))
    assert NodeOpParams.model_validate(step.model_dump(mode="json")) == step
