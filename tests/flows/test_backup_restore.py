"""Backup, restore verification and restore against the real lab: PostgreSQL 15, moto's S3, Prefect.

Every acceptance point of issue 3 has a test here.  Tests that need another cluster
shape (an eu-resident cluster, a fourth node, a retention playground) write a copy of
the lab's topology that points at the same servers.  Objects created here are removed
when the module ends, and the lab's three nodes are left as they were.
"""

from __future__ import annotations

import contextvars
import os
import shutil
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run

from flows.backup import BackupParams, backup
from flows.restore import RestoreParams, restore
from flows.restore_verify import RestoreVerifyParams, restore_verify, scratch_root
from regionops.backup import catalog
from regionops.backup.manifest import (
    MANIFEST,
    VERIFICATION,
    BackupManifest,
    RecoveryTarget,
    StoredObject,
    Verification,
    backup_prefix,
    cluster_prefix,
)
from regionops.backup.scratch import free_port
from regionops.drivers.backupsql import BackupSql
from regionops.drivers.objectstore import objectstore_for
from regionops.drivers.pgtools import PgCtl
from regionops.drivers.postgres import ConnInfo, SqlNode
from regionops.errors import ApprovalRejected, PreconditionFailed, VerificationFailed
from regionops.runbook.locks import cluster_lock
from regionops.waiting import poll_until
from tests import labtools

pytestmark = pytest.mark.lab

EU, US = "regionops-lab-eu", "regionops-lab-us"
TABLE = "public.app_events"


# --- helpers ---------------------------------------------------------------------------


def topo_path(lab) -> str:
    return str(lab.cfg.topology_path)


def store_of(lab):
    return objectstore_for(lab.topology())


def run_backup(lab, topology: str | None = None, **overrides):
    params = dict(topology=topology or topo_path(lab), notify=False)
    return backup(BackupParams(**(params | overrides)))


def run_verify(lab, topology: str | None = None, **overrides):
    return restore_verify(RestoreVerifyParams(**(dict(topology=topology or topo_path(lab)) | overrides)))


def primary_fingerprint(lab) -> dict:
    return BackupSql(labtools.sql(lab, "eu-1").info).fingerprints([TABLE])[TABLE]


def insert_rows(lab, n: int, tag: str) -> None:
    labtools.sql(lab, "eu-1").query(
        "INSERT INTO app_events (region, payload) SELECT 'eu', %s || g FROM generate_series(1, %s) g", (tag, n)
    )


def variant(lab, tmp_path: Path, name: str, cluster_name: str, change) -> str:
    """A copy of the lab's topology with cluster ``core`` renamed and changed by ``change(cluster)``."""
    doc = yaml.safe_load(lab.cfg.topology_path.read_text())
    cluster = doc["clusters"].pop("core")
    change(cluster)
    doc["clusters"] = {cluster_name: cluster}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def flip_byte(store, bucket: str, key: str, offset: int | None = None) -> bytes:
    """Flip one byte of an object; returns the original bytes (to put back)."""
    original = store.get_bytes(bucket, key)
    at = len(original) // 2 if offset is None else offset
    store.put_bytes(bucket, key, original[:at] + bytes([original[at] ^ 0xFF]) + original[at + 1:])
    return original


@pytest.fixture(scope="module", autouse=True)
def leave_buckets_as_found(lab):
    """Remove every backup object this module created, in every lab bucket."""
    store = store_of(lab)
    buckets = [r.bucket for r in lab.topology().regions.values()]
    before = {b: {o.key for o in store.list(b, "backups/")} for b in buckets}
    yield
    for b in buckets:
        created = [o.key for o in store.list(b, "backups/") if o.key not in before[b]]
        if created:
            store.delete(b, created)
        store.abort_pending_uploads(b, "backups/")


@pytest.fixture(scope="module")
def first_backup(lab):
    """One backup of core taken while the lab is quiet, with the primary's fingerprint just before it."""
    insert_rows(lab, 2000, "before-backup-")
    expected = primary_fingerprint(lab)
    result = run_backup(lab, compression="zstd")
    insert_rows(lab, 500, "after-backup-")  # must not be in the restore
    return result, expected


# --- backup + restore verification ---------------------------------------------------


def test_restore_verify_passes_reports_restore_time_and_has_the_rows_of_backup_time(lab, first_backup):
    result, expected = first_backup
    labtools.clear_slack(lab)
    verdict = run_verify(lab, backup_id=result.manifest.backup_id)
    assert verdict.passed and verdict.restore_seconds > 0 and verdict.total_seconds >= verdict.restore_seconds
    assert [p.phase for p in verdict.phases] == [
        "prepare", "prepare", "download + unpack base", "pg_verifybackup", "download + unpack wal",
        "configure", "start", "recover", "fingerprint", "teardown",
    ]
    assert "backup successfully verified" in verdict.phases[3].detail
    tables = {t.table: t for t in verdict.tables}
    # The seeded application tables are proven too, with their real rows.
    assert set(tables) == {TABLE, "public.customers", "public.products", "public.orders"}
    assert tables["public.orders"].restored_rows == 5 * tables["public.customers"].restored_rows > 0
    assert all((t.restored_rows, t.restored_checksum) == (t.expected_rows, t.expected_checksum)
               for t in tables.values())
    table = tables[TABLE]
    # Exactly the primary's rows at backup time: not the 500 inserted after it.
    assert (table.restored_rows, table.restored_checksum) == (expected["rows"], expected["checksum"])
    assert primary_fingerprint(lab)["rows"] == expected["rows"] + 500
    assert "restore time" in verdict.sentence()
    # Reported: Slack summary, markdown + table artifacts, and the verdict beside the backup.
    texts = " ".join(m["text"] for m in labtools.slack_messages(lab))
    assert "restore time" in texts and result.manifest.backup_id in texts
    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_latest_artifacts(limit=100)}
    assert {"restore-verify-report", "restore-verify-phases", "backup-report", "backup-core-progress"} <= keys
    raw = store_of(lab).get_bytes(EU, backup_prefix("core", result.manifest.backup_id) + VERIFICATION)
    assert Verification.model_validate_json(raw).status == "passed"
    # Whatever happened, the scratch instance is gone.
    assert not [p for p in scratch_root(None).iterdir() if result.manifest.backup_id in p.name]


def test_backup_under_concurrent_writes_restores_exactly_its_fingerprint(lab):
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            insert_rows(lab, 50, "during-backup-")

    thread = threading.Thread(target=writer, daemon=True)
    before = primary_fingerprint(lab)["rows"]
    thread.start()
    try:
        result = run_backup(lab, compression="lz4", copy_to=[], prune=False)
    finally:
        stop.set()
        thread.join(timeout=10)
    after = primary_fingerprint(lab)["rows"]
    m = result.manifest
    assert before < m.fingerprint[TABLE].rows < after  # taken while rows kept arriving
    verdict = run_verify(lab, backup_id=m.backup_id)
    assert verdict.passed and verdict.tables[0].restored_rows == m.fingerprint[TABLE].rows


# --- corruption, missing manifest, interrupted backup --------------------------------


def test_flipped_byte_fails_verification_naming_the_object(lab):
    result = run_backup(lab, compression="none", part_size_mb=5, volume_size_gb=5 / 1024, copy_to=[], prune=False)
    m = result.manifest
    assert len(m.base_objects) >= 3  # uncompressed, cut into 5 MiB volumes
    store = store_of(lab)
    victim = m.base_objects[1].key
    original = flip_byte(store, EU, victim)
    try:
        with pytest.raises(VerificationFailed) as err:
            run_verify(lab, backup_id=m.backup_id, notify=False)
    finally:
        store.put_bytes(EU, victim, original)
    assert f"s3://{EU}/{victim}" in str(err.value) and "corrupt" in str(err.value)
    raw = store.get_bytes(EU, backup_prefix("core", m.backup_id) + VERIFICATION)
    assert Verification.model_validate_json(raw).status == "failed"
    assert not [p for p in scratch_root(None).iterdir() if m.backup_id in p.name]


def test_truncated_wal_tail_fails_naming_the_object(lab, first_backup):
    m = first_backup[0].manifest
    store = store_of(lab)
    (wal,) = m.wal_objects
    original = store.get_bytes(EU, wal.key)
    store.put_bytes(EU, wal.key, original[: len(original) // 2])
    try:
        with pytest.raises(VerificationFailed, match=f"{wal.key} is truncated"):
            run_verify(lab, backup_id=m.backup_id, notify=False)
    finally:
        store.put_bytes(EU, wal.key, original)


def test_backup_without_manifest_is_not_offered(lab, first_backup):
    store = store_of(lab)
    newest = run_backup(lab, copy_to=[], prune=False).manifest
    key = backup_prefix("core", newest.backup_id) + MANIFEST
    saved = store.get_bytes(EU, key)
    store.delete(EU, [key])
    try:
        offered = [e.backup_id for e in catalog.complete_backups(store, EU, "core")]
        assert newest.backup_id not in offered and first_backup[0].manifest.backup_id in offered
        listed = {e.backup_id: e.state for e in catalog.list_backups(store, EU, "core")}
        assert listed[newest.backup_id] == "unrecognised"  # left alone, never restored
        verdict = run_verify(lab, notify=False)  # "the newest complete backup" skips it
        assert verdict.passed and verdict.backup_id != newest.backup_id
        with pytest.raises(PreconditionFailed, match="has no manifest.*not offered for restore"):
            run_verify(lab, backup_id=newest.backup_id, notify=False)
    finally:
        store.put_bytes(EU, key, saved)


@pytest.fixture
def fourth_node(lab, tmp_path):
    """Topology with a node eu-2 whose data directory already holds (stale) data."""
    data_dir = lab.cfg.pg_dir / "eu-2"
    port = free_port()

    def change(cluster: dict) -> None:
        cluster["nodes"]["eu-2"] = {"region": "eu", "host": "127.0.0.1", "port": port,
                                    "data_dir": str(data_dir), "priority": 10}
        cluster["backup"]["copy_to"] = []

    path = variant(lab, tmp_path, "four-nodes", "core", change)
    data_dir.mkdir(parents=True)
    (data_dir / "OLD_DATA_MARKER").write_text("the data that was here before the restore\n")
    yield path, data_dir, port
    ctl = PgCtl(data_dir, lab.cfg.os_user)
    if (data_dir / "postmaster.pid").exists() and ctl.is_running():
        ctl.stop("immediate")
    labtools.sql(lab, "eu-1", "postgres").drop_slot("eu_2")
    for leftover in data_dir.parent.glob("eu-2*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    labtools.wait_steady(lab)


def test_restore_dry_run_and_a_rejected_approval_change_nothing(lab, first_backup, fourth_node):
    path, data_dir, _ = fourth_node
    plan = restore(RestoreParams(topology=path, node="eu-2", dry_run=True, notify=False))
    assert plan.dry_run and plan.plan.role == "replica" and plan.plan.primary == "eu-1"
    assert plan.plan.node_has_data and not plan.plan.node_running
    assert (data_dir / "OLD_DATA_MARKER").exists() and not Path(plan.plan.staging_dir).exists()

    # With approval required the run pauses; declining it stops the run before any change.
    outcome: dict = {}

    def run() -> None:
        outcome["state"] = restore(RestoreParams(topology=path, node="eu-2", notify=False), return_state=True)

    # Prefect's settings (which server) live in context variables: the thread needs ours.
    thread = threading.Thread(target=contextvars.copy_context().run, args=(run,), daemon=True)
    thread.start()
    with get_client(sync_client=True) as client:
        def paused_run():
            assert "state" not in outcome, f"the restore ended without pausing: {outcome['state']}"
            paused = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
            runs = client.read_flow_runs(flow_run_filter=paused, limit=5)
            return next((r for r in runs if r.name and r.parameters.get("params", {}).get("node") == "eu-2"), None)

        run_ = poll_until(paused_run, timeout=60, interval=0.5, what="the restore to pause for approval")
        resume_flow_run(run_.id, run_input={"approver": "test", "reason": "not tonight", "confirm": "no"})
    thread.join(timeout=60)
    state = outcome["state"]
    assert state.is_failed()
    with pytest.raises(ApprovalRejected, match="rejected by test \\(not tonight\\): expected 'restore eu-2'"):
        state.result()
    assert (data_dir / "OLD_DATA_MARKER").exists() and not Path(plan.plan.staging_dir).exists()


def test_restore_keeps_the_old_directory_until_the_new_one_is_verified(lab, first_backup, fourth_node):
    path, data_dir, port = fourth_node
    store = store_of(lab)
    newest = catalog.find_backup(store, EU, "core").manifest
    staging = Path(f"{data_dir}.restore-{newest.backup_id}")

    # 1. Verification fails (a corrupt object): the old directory is untouched, nothing is swapped.
    victim = newest.base_objects[0].key
    original = flip_byte(store, EU, victim)
    try:
        with pytest.raises(VerificationFailed, match=victim):
            restore(RestoreParams(topology=path, node="eu-2", require_approval=False, notify=False))
    finally:
        store.put_bytes(EU, victim, original)
    assert (data_dir / "OLD_DATA_MARKER").exists() and not staging.exists()
    assert not (data_dir / "PG_VERSION").exists()

    # 2. Verification passes: only then the swap; the node streams from eu-1; old data kept as asked.
    insert_rows(lab, 10, "before-restore-")
    result = restore(RestoreParams(topology=path, node="eu-2", require_approval=False, keep_old=True, notify=False))
    assert result.verified_at is not None and result.swapped_at is not None
    assert result.verified_at < result.swapped_at
    assert result.tables and result.tables[0].restored_rows == newest.fingerprint[TABLE].rows
    old = Path(result.activation.old_dir)
    assert (old / "OLD_DATA_MARKER").exists() and not (data_dir / "OLD_DATA_MARKER").exists()
    assert (data_dir / "PG_VERSION").exists() and not staging.exists()
    replica = SqlNode(ConnInfo("127.0.0.1", port, "app", "postgres"))
    poll_until(lambda: replica.query("SELECT count(*) AS n FROM app_events")[0]["n"]
               == labtools.sql(lab, "eu-1").query("SELECT count(*) AS n FROM app_events")[0]["n"],
               timeout=30, what="eu-2 to catch up with eu-1")
    states = {r["application_name"] for r in labtools.sql(lab, "eu-1").query(
        "SELECT application_name FROM pg_stat_replication")}
    assert "eu-2" in states
    with cluster_lock("core", "probe", wait_seconds=5):  # the restore released the cluster's change lock
        pass
