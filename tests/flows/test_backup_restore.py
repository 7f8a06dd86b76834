"""Backup (the old engine) against the real lab: PostgreSQL 15, moto's S3, Prefect.

Every acceptance point of issue 3 has a test here.  Tests that need another cluster
shape (an eu-resident cluster, a fourth node, a retention playground) write a copy of
the lab's topology that points at the same servers.  Objects created here are removed
when the module ends, and the lab's three nodes are left as they were.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from flows.backup import BackupParams, backup
from regionops.backup import catalog
from regionops.backup.copy import copy_backup
from regionops.backup.manifest import (
    MANIFEST,
    BackupManifest,
    RecoveryTarget,
    StoredObject,
    Verification,
    backup_prefix,
    cluster_prefix,
)
from regionops.drivers.backupsql import BackupSql
from regionops.drivers.objectstore import objectstore_for
from regionops.errors import PreconditionFailed, ResidencyViolation
from regionops.runbook.locks import BACKUP_LEASE_SECONDS, backup_lock
from regionops.topology import load_topology
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


def test_backup_lands_in_the_eu_bucket_with_its_manifest(lab, first_backup):
    result, expected = first_backup
    m = result.manifest
    assert result.source.node == "us-1" and result.source.role == "replica"  # the primary is spared
    assert m.home_region == "eu" and m.cluster == "core" and m.compression == "zstd"
    store = store_of(lab)
    keys = {o.key for o in store.list(EU, backup_prefix("core", m.backup_id))}
    assert backup_prefix("core", m.backup_id) + MANIFEST in keys
    assert {o.key for o in m.objects} <= keys
    assert not any(k.endswith("in-progress.json") for k in keys)  # heartbeat gone once complete
    stored = BackupManifest.model_validate_json(store.get_bytes(EU, backup_prefix("core", m.backup_id) + MANIFEST))
    assert stored == m
    for obj in m.objects:  # the manifest's sha256 is that of the bytes in the bucket
        assert hashlib.sha256(store.get_bytes(EU, obj.key)).hexdigest() == obj.sha256
    assert m.fingerprint[TABLE].rows == expected["rows"]
    assert m.fingerprint[TABLE].checksum == expected["checksum"]
    assert m.recovery_target.kind == "name" and m.recovery_target.lsn >= m.end_lsn
    assert m.system_identifier and m.server_version >= 150000 and m.timeline == 1
    assert m.size_before > m.size_after > 0
    assert m.sentence().startswith(f"backup {m.backup_id} of core from us-1: ")
    # The topology copies core's backups to the US bucket; the copy is complete and identical.
    assert [c.region for c in result.copies] == ["us"] and result.copies[0].verified
    assert store.head(US, backup_prefix("core", m.backup_id) + MANIFEST) is not None


# --- corruption, missing manifest, interrupted backup --------------------------------


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
        with pytest.raises(PreconditionFailed, match="has no manifest.*not offered for restore"):
            catalog.find_backup(store, EU, "core", newest.backup_id)
    finally:
        store.put_bytes(EU, key, saved)


def test_killed_backup_leaves_no_manifest_and_the_next_run_removes_its_parts(lab, tmp_path):
    store = store_of(lab)
    known = {e.backup_id for e in catalog.list_backups(store, EU, "core")}
    cmd = [
        sys.executable, "-m", "regionops.cli", "run", "backup", "--topology", topo_path(lab),
        "--set", "compression=none", "--set", "max_rate_kbps=4096", "--set", "part_size_mb=5",
        "--set", "orphan_grace_seconds=3", "--set", "copy_to=[]", "--set", "prune=false", "--set", "notify=false",
    ]
    output = tmp_path / "backup.out"
    with output.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=Path(__file__).parents[2], start_new_session=True,
                                stdout=out, stderr=subprocess.STDOUT)

    def uploading() -> bool:
        assert proc.poll() is None, f"the backup ended early: {output.read_text()[-2000:]}"
        return bool(store.pending_uploads(EU, cluster_prefix("core")))

    try:
        # Halfway: parts are being uploaded (an unfinished multipart upload exists).
        poll_until(uploading, timeout=90, interval=0.2, what="the backup to start uploading")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    (killed,) = [e for e in catalog.list_backups(store, EU, "core") if e.backup_id not in known]
    assert killed.state != "complete" and killed.manifest is None and killed.pending_uploads >= 1
    assert not any(k.endswith(MANIFEST) for k in killed.object_keys)
    poll_until(
        lambda: next(e for e in catalog.list_backups(store, EU, "core", grace_seconds=3)
                     if e.backup_id == killed.backup_id).state == "interrupted",
        timeout=30, interval=0.5, what="the killed backup's heartbeat to go stale",
    )

    # The killed run could not release its backup lock: the next one waits for its lease to expire.
    nxt = run_backup(lab, orphan_grace_seconds=3, copy_to=[], prune=False,
                     lock_wait_seconds=BACKUP_LEASE_SECONDS + 60)
    assert killed.backup_id in nxt.cleanups[0].removed
    prefix = backup_prefix("core", killed.backup_id)
    assert store.list(EU, prefix) == [] and store.pending_uploads(EU, prefix) == []
    assert store.pending_uploads(EU, cluster_prefix("core")) == []
    assert nxt.manifest is not None


# --- residency ---------------------------------------------------------------------------


def eu_resident(lab, tmp_path) -> str:
    def change(cluster: dict) -> None:
        cluster["residency"] = ["eu"]
        cluster["nodes"] = {"eu-1": cluster["nodes"]["eu-1"]}
        cluster["backup"]["copy_to"] = []

    return variant(lab, tmp_path, "eu-resident", "eucore", change)


def test_a_second_backup_of_a_cluster_waits_then_refuses_visibly(lab):
    before = {e.backup_id for e in catalog.list_backups(store_of(lab), EU, "core")}
    with backup_lock("core", wait_seconds=5):  # another backup of core is running
        started = time.monotonic()
        state = backup(BackupParams(topology=topo_path(lab), lock_wait_seconds=6), return_state=True)
        waited = time.monotonic() - started
    assert state.is_failed() and waited >= 6
    with pytest.raises(PreconditionFailed, match="backup refused: another backup of cluster core is running"):
        state.result()
    assert {e.backup_id for e in catalog.list_backups(store_of(lab), EU, "core")} == before
    assert "another backup of cluster core is running" in " ".join(m.get("text", "") for m in
                                                                    labtools.slack_messages(lab))


def test_eu_resident_copy_to_a_us_bucket_is_refused_before_anything_moves(lab, tmp_path):
    path = eu_resident(lab, tmp_path)
    store = store_of(lab)
    with pytest.raises(ResidencyViolation) as err:
        run_backup(lab, topology=path, copy_to=["us"])
    message = str(err.value)
    assert "region us" in message and "clusters.eucore.residency = [eu]" in message
    # Refused before the backup was even taken: nothing in either bucket.
    assert store.list(US, cluster_prefix("eucore")) == [] and store.list(EU, cluster_prefix("eucore")) == []

    # A finished backup of the same cluster: copying it to the US is refused, too, before a byte moves.
    done = run_backup(lab, topology=path, prune=False)
    assert done.source.role == "primary" and store.head(EU, backup_prefix("eucore", done.manifest.backup_id) + MANIFEST)
    with pytest.raises(ResidencyViolation, match="nothing was copied"):
        copy_backup(load_topology(path), "eucore", done.manifest, source_bucket=EU, target_region="us", store=store)
    assert store.list(US, cluster_prefix("eucore")) == [] and store.pending_uploads(US, cluster_prefix("eucore")) == []


# --- retention ---------------------------------------------------------------------------


def fake_backup(store, cluster: str, backup_id: str, age_days: float, verified: bool | None = None) -> None:
    finished = datetime.now(timezone.utc) - timedelta(days=age_days)
    prefix = backup_prefix(cluster, backup_id)
    data = prefix + "base.tar.000"
    store.put_bytes(EU, data, b"not really a backup")
    manifest = BackupManifest(
        backup_id=backup_id, cluster=cluster, topology="lab", source_node="eu-1", source_role="primary",
        home_region="eu", server_version=150000, system_identifier="1", timeline=1, start_lsn="0/1",
        end_lsn="0/2", started_at=finished, finished_at=finished, size_before=19, size_after=19,
        compression="none", pg_manifest=True, objects=[StoredObject(key=data, kind="base", size=19, sha256="0" * 64)],
        recovery_target=RecoveryTarget(kind="immediate"),
    )
    store.put_bytes(EU, prefix + MANIFEST, manifest.model_dump_json().encode())
    if verified is not None:
        catalog.write_verification(store, EU, cluster, Verification(
            backup_id=backup_id, status="passed" if verified else "failed", at=finished))


def test_retention_dry_run_changes_nothing_and_a_real_run_keeps_exactly_the_policy(lab, tmp_path):
    path = variant(lab, tmp_path, "retention", "rtest", lambda c: c["backup"].update(copy_to=[]))
    store = store_of(lab)
    ages = {"20260101T000001Z": 0.1, "20260101T000002Z": 1, "20260101T000003Z": 2, "20260101T000004Z": 10,
            "20260101T000005Z": 20, "20260101T000006Z": 30}
    for bid, age in ages.items():
        fake_backup(store, "rtest", bid, age, verified={"20260101T000005Z": True, "20260101T000006Z": True,
                                                        "20260101T000001Z": False}.get(bid))
    everything = sorted(o.key for o in store.list(EU, cluster_prefix("rtest")))

    dry = run_backup(lab, topology=path, take_backup=False, dry_run=True, keep_last=2, max_age_days=5)
    (plan,) = dry.retention
    assert sorted(plan.plan.delete) == ["20260101T000004Z", "20260101T000006Z"] and plan.deleted == []
    assert sorted(o.key for o in store.list(EU, cluster_prefix("rtest"))) == everything  # nothing changed

    real = run_backup(lab, topology=path, take_backup=False, keep_last=2, max_age_days=5)
    (outcome,) = real.retention
    assert sorted(outcome.deleted) == ["20260101T000004Z", "20260101T000006Z"]
    left = sorted(e.backup_id for e in catalog.list_backups(store, EU, "rtest"))
    # last 2 (0.1 d, 1 d) + younger than 5 days (2 d) + newest verified (20 d, though outside the policy)
    assert left == ["20260101T000001Z", "20260101T000002Z", "20260101T000003Z", "20260101T000005Z"]
    reasons = {d.backup_id: d.reasons for d in outcome.plan.decisions}
    assert "newest verified backup" in reasons["20260101T000005Z"]
