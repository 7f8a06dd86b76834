"""Restore verification and restore on pgBackRest, against the real lab (PostgreSQL 15, moto over TLS, Prefect).

Backups are taken with the driver and the proof helpers (``tests/pgbackrest_tools.py``),
not the backup runbook.  The point-in-time test runs on a private cluster, because it
fails the primary over; the others share the session lab and leave its nodes as they were.
"""

from __future__ import annotations

import contextvars
import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run

from flows.failover import FailoverParams, failover
from flows.restore import RestoreParams, restore
from flows.restore_verify import RestoreVerifyParams, restore_verify, scratch_root
from regionops.backup.proof import ProofStore
from regionops.backup.scratch import free_port
from regionops.drivers.aws import s3_client
from regionops.drivers.pgbackrest import PgBackRest, plan_stanza, write_config
from regionops.drivers.pgtools import PgCtl
from regionops.drivers.postgres import ConnInfo, SqlNode
from regionops.errors import ApprovalRejected, PreconditionFailed, VerificationFailed
from regionops.lab import pglab
from regionops.runbook.locks import cluster_lock
from regionops.topology import load_topology
from regionops.waiting import poll_until
from tests import ha_tools as ha
from tests import labtools
from tests.pgbackrest_tools import take_backup

pytestmark = pytest.mark.lab

TABLE = "public.app_events"


def topo_path(lab) -> str:
    return str(lab.cfg.topology_path)


def insert_rows(lab, n: int, tag: str, node: str = "eu-1") -> None:
    labtools.sql(lab, node).query(
        "INSERT INTO app_events (region, payload) SELECT 'eu', %s || g FROM generate_series(1, %s) g", (tag, n)
    )


def variant(lab, tmp_path: Path, name: str, change) -> str:
    """A copy of the lab's topology with cluster ``core`` changed by ``change(cluster)``."""
    doc = yaml.safe_load(lab.cfg.topology_path.read_text())
    change(doc["clusters"]["core"])
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


@pytest.fixture(scope="module")
def proof(lab):
    """A full backup of core with its proof record, and rows written after it (not in the proof)."""
    insert_rows(lab, 500, "before-backup-")
    taken = take_backup(lab, "core", "full")
    insert_rows(lab, 200, "after-backup-")
    return taken


@pytest.fixture
def lone_set(lab, proof, tmp_path):
    """A repository holding one full backup set and its proof record only: (topology path, label).

    A topology whose repo1 has a path of its own (no copy), with the configuration, lock
    and log directories of its own: the lab's nodes never archive there, so the set is
    taken without archive-check (the test's restore fails before it would need WAL).  The
    runbook asks ``pgbackrest verify`` after a failed restore, which reads the whole
    repository: here one set, not every backup the session took.  Removed afterwards.
    """
    work = Path(tempfile.mkdtemp(prefix="regionops-lone-set-"))
    os.chmod(work, 0o755)  # pgBackRest runs as PostgreSQL's OS user and reads its configuration in there

    def own_repository(cluster: dict) -> None:
        cluster["backup"]["copy_to"] = []
        cluster["backup"]["pgbackrest"] |= {
            "repo_path": f"/pgbackrest-lone-{work.name}",
            "config_dir": str(work / "conf"),
            "spool_dir": str(work / "spool"),
            "lock_dir": str(work / "lock"),
            "log_dir": str(work / "log"),
        }

    path = variant(lab, tmp_path, "lone-set", own_repository)
    topo = load_topology(path)
    pgbr = PgBackRest.for_node(topo, "core", "eu-1")
    repo = pgbr.plan.repositories[0]
    try:
        write_config(topo, pgbr.plan, "eu-1")
        pgbr.stanza_create()
        out = pgbr.run("backup", "--type=full", "--repo=1", "--no-archive-check", "--log-level-console=info")
        label = re.search(r"new backup label = (\S+)", out.stdout + out.stderr).group(1)
        ProofStore.for_cluster(topo, "core").put_proof(proof.model_copy(update={"label": label}))
        yield path, label
    finally:
        s3 = s3_client(topo, repo.aws_region)
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=repo.bucket, Prefix=repo.path.strip("/") + "/")
        for page in pages:
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=repo.bucket, Delete={"Objects": keys})
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def damaged_bundle(lab, lone_set):
    """The largest repository object of the lone set, corrupted (the repository goes afterwards)."""
    path, label = lone_set
    topo = load_topology(path)
    repo = plan_stanza(topo, "core").repositories[0]
    s3 = s3_client(topo, repo.aws_region)
    prefix = f"{repo.path.strip('/')}/backup/core/{label}/"
    objects = s3.list_objects_v2(Bucket=repo.bucket, Prefix=prefix)["Contents"]
    key = max(objects, key=lambda o: o["Size"])["Key"]
    original = s3.get_object(Bucket=repo.bucket, Key=key)["Body"].read()
    middle = len(original) // 2
    s3.put_object(Bucket=repo.bucket, Key=key, Body=original[:middle] + bytes(64) + original[middle + 64 :])
    return key


# --- restore verification -----------------------------------------------------------------


def test_restore_verify_of_a_full_backup_matches_its_proof_and_stores_the_verdict(lab, proof):
    labtools.clear_slack(lab)
    state = restore_verify(RestoreVerifyParams(topology=topo_path(lab), label=proof.label), return_state=True)
    verdict = state.result()
    assert verdict.passed and verdict.label == proof.label, verdict.sentence()
    assert verdict.target == f"restore point {proof.restore_point} (the proof of {proof.label})"
    assert 0 < verdict.restore_seconds <= verdict.total_seconds
    tables = {t.table: t for t in verdict.tables}
    assert set(tables) == set(proof.fingerprint) and all(t.compared and t.matches for t in verdict.tables)
    assert (tables[TABLE].restored_rows, tables[TABLE].restored_checksum) == (
        proof.fingerprint[TABLE].rows,
        proof.fingerprint[TABLE].checksum,
    )
    now = labtools.sql(lab, "eu-1").query("SELECT count(*) AS n FROM app_events")[0]["n"]
    assert now >= tables[TABLE].restored_rows + 200  # rows written after the proof point are not in the restore
    stored = ProofStore.for_cluster(lab.topology(), "core").verification(proof.label)
    assert stored and stored.status == "passed" and stored.restore_seconds == verdict.restore_seconds
    assert proof.restore_point in stored.target
    assert "restore time" in ha.slack_texts(lab) and proof.label in ha.report_markdown(ha.run_id(state))
    assert not (scratch_root(None) / f"restore-verify-core-{str(ha.run_id(state))[:8]}").exists()  # torn down


def test_a_corrupted_repository_object_fails_restore_verification_naming_it(lab, lone_set, damaged_bundle):
    # (pgBackRest retries the failing restore job after 15 s, then verify reads the lone set's repository)
    path, label = lone_set
    state = restore_verify(RestoreVerifyParams(topology=path, label=label, notify=False), return_state=True)
    assert state.is_failed()
    with pytest.raises(VerificationFailed) as err:
        state.result()
    message = str(err.value)
    # pgBackRest's restore error names no object; the runbook asks verify, which does.
    assert "pgbackrest restore" in message and f"invalid checksum '{label}/pg_data/" in message, message
    stored = ProofStore.for_cluster(load_topology(path), "core").verification(label)
    assert stored and stored.status == "failed" and label in stored.detail
    assert not (scratch_root(None) / f"restore-verify-core-{str(ha.run_id(state))[:8]}").exists()


def test_restore_verify_refuses_a_set_that_does_not_exist_or_a_target_before_its_end(lab, proof):
    with pytest.raises(PreconditionFailed, match="backup set 20200101-000000F does not exist in repo1"):
        restore_verify(RestoreVerifyParams(topology=topo_path(lab), label="20200101-000000F", notify=False))
    with pytest.raises(PreconditionFailed, match=f"is before backup set {proof.label} ended"):
        restore_verify(
            RestoreVerifyParams(
                topology=topo_path(lab),
                label=proof.label,
                target_type="time",
                target="2020-01-01 00:00:00+00",
                notify=False,
            )
        )


# --- point in time, across a failover ---------------------------------------------------

PITR = "public.pitr_rows"


def checksum_of(ids: range) -> str:
    """What the fingerprint's checksum is for a one-column table holding exactly ``ids`` (computed here, not in SQL)."""
    return str(sum(int(hashlib.md5(f"({i})".encode()).hexdigest()[:15], 16) for i in ids))


def write_numbered(node: SqlNode, ids: range) -> None:
    for i in ids:  # one commit per row: each acknowledged before the next
        node.query(f"INSERT INTO {PITR} (id) VALUES (%s)", (i,))


def test_point_in_time_across_a_failover_brings_back_every_row_before_t_and_none_after(lab, tmp_path):
    with ha.private_cluster() as cluster:
        path = variant(
            cluster,
            tmp_path,
            "pitr",
            lambda c: c["backup"].__setitem__("fingerprint_tables", [*c["backup"]["fingerprint_tables"], PITR]),
        )
        from regionops.topology import load_topology

        topo = load_topology(path)
        eu = ha.sql(cluster, "eu-1")
        eu.query(f"CREATE TABLE {PITR} (id int PRIMARY KEY)")
        # Given a backup, and numbered rows written after it on eu-1 (replicated and archived)
        taken = take_backup(topo, "core", "full")
        assert taken.fingerprint[PITR].rows == 0
        write_numbered(eu, range(1, 51))
        poll_until(
            lambda: ha.sql(cluster, "us-1").query(f"SELECT count(*) AS n FROM {PITR}")[0]["n"] == 50,
            timeout=30,
            what="us-1 to replay rows 1-50",
        )
        PgBackRest.for_node(topo, "core", "eu-1").check()

        # When eu-1 crashes and failover promotes us-1 (a new timeline), and rows keep coming there
        ha.crash(cluster, "eu-1")
        moved = failover(
            FailoverParams(
                topology=path,
                grace_seconds=1.0,
                probes=2,
                probe_timeout_seconds=1,
                reason="test: point in time across a failover",
                lock_wait_seconds=15,
            )
        )
        assert moved.ok and moved.new_primary == "us-1"
        us = ha.sql(cluster, "us-1")
        wal = us.query("SELECT pg_walfile_name(pg_current_wal_lsn()) AS f")[0]["f"]
        assert int(wal[:8], 16) >= 2, wal  # us-1 writes a new timeline
        write_numbered(us, range(51, 101))
        time.sleep(0.2)
        t = us.query("SELECT clock_timestamp()::text AS t")[0]["t"]  # after row 100's commit was acknowledged
        time.sleep(0.2)
        write_numbered(us, range(101, 121))  # committed after T: must not come back
        us.query(f"DROP TABLE {PITR}")
        PgBackRest.for_node(topo, "core", "us-1").check()  # the new timeline's WAL is in the archive

        # Then a restore to T brings back rows 1-100 exactly (both timelines), none after
        verdict = restore_verify(RestoreVerifyParams(topology=path, target_type="time", target=t, notify=False))
        assert verdict.passed and verdict.label == taken.label, verdict.sentence()
        assert verdict.target == f"time {t}"
        table = next(c for c in verdict.tables if c.table == PITR)
        assert not table.compared  # not the proof's point: counted, and checked here
        assert (table.restored_rows, table.restored_checksum) == (100, checksum_of(range(1, 101)))

        # And the restore runbook, with the writers stopped, makes eu-1 a primary at T: the table is back.
        for node in ("us-1", "apac-1"):
            pglab.pgctl(cluster.cfg, node).stop("fast")
        as_primary = dict(
            topology=path,
            node="eu-1",
            role="primary",
            target_type="time",
            target=t,
            require_approval=False,
            notify=False,
            lock_wait_seconds=15,
        )
        # Stopped nodes do not answer: each could be a primary nobody can see, so the runbook refuses
        # until the operator confirms them down (and then fences them first).
        refused = restore(RestoreParams(**as_primary), return_state=True)
        with pytest.raises(PreconditionFailed, match="us-1 does not answer.*it may be a primary"):
            refused.result()
        assert (cluster.cfg.data_dir("eu-1") / "standby.signal").exists()  # the failover's fence, untouched
        done = restore(RestoreParams(**as_primary, confirmed_down=["us-1", "apac-1"]))
        assert done.plan.label == taken.label and done.plan.role == "primary", done.sentence()
        # the restored primary is the writer now; the nodes confirmed down are fenced, it is not
        assert ha.writer(cluster) == "eu-1"
        assert set(ha.fences(cluster)) == {"us-1", "apac-1"}
        assert f"time {t}" in done.sentence() and done.verified_at < done.swapped_at
        restored = ha.sql(cluster, "eu-1")
        assert [r["id"] for r in restored.query(f"SELECT id FROM {PITR} ORDER BY id")] == list(range(1, 101))
        restored.query(f"INSERT INTO {PITR} (id) VALUES (101)")  # a primary: it takes writes again
        # Its new timeline's history file reaches the archive, so a later restore can follow it.
        tli = restored.query("SELECT timeline_id FROM pg_control_checkpoint()")[0]["timeline_id"]
        repo = plan_stanza(topo, "core").repositories[0]
        s3 = s3_client(topo, repo.aws_region)

        def history_archived() -> bool:
            listed = s3.list_objects_v2(Bucket=repo.bucket, Prefix=repo.path.strip("/") + "/archive/core/")
            return any(o["Key"].endswith(f"/{tli:08X}.history") for o in listed.get("Contents", []))

        poll_until(history_archived, timeout=30, interval=0.5, what=f"timeline {tli}'s history file in the archive")


# --- restore onto a node ------------------------------------------------------------------


@pytest.fixture
def fourth_node(lab, tmp_path):
    """Topology with a node eu-2 whose data directory already holds (stale) data."""
    data_dir = lab.cfg.pg_dir / "eu-2"
    port = free_port()

    def change(cluster: dict) -> None:
        cluster["nodes"]["eu-2"] = {
            "region": "eu",
            "host": "127.0.0.1",
            "port": port,
            "data_dir": str(data_dir),
            "priority": 0,
        }

    path = variant(lab, tmp_path, "four-nodes", change)
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
    plan = plan_stanza(lab.topology(), "core")
    plan.config_path("eu-2").unlink(missing_ok=True)
    shutil.rmtree(plan.spool_path("eu-2"), ignore_errors=True)
    labtools.wait_steady(lab)


def test_restore_into_a_used_directory_is_refused_and_changes_nothing(lab, proof, fourth_node):
    path, data_dir, _ = fourth_node
    staging = Path(f"{data_dir}.restore-{proof.label}")
    staging.mkdir()
    (staging / "SOMEONES_FILE").write_text("not ours\n")
    with pytest.raises(PreconditionFailed, match=f"{staging} exists and is not empty; a restore never writes"):
        restore(RestoreParams(topology=path, node="eu-2", label=proof.label, require_approval=False, notify=False))
    assert [p.name for p in staging.iterdir()] == ["SOMEONES_FILE"]
    assert [p.name for p in data_dir.iterdir()] == ["OLD_DATA_MARKER"]


def test_restore_dry_run_and_a_rejected_approval_change_nothing(lab, proof, fourth_node):
    path, data_dir, _ = fourth_node
    plan = restore(RestoreParams(topology=path, node="eu-2", dry_run=True, notify=False))
    assert plan.dry_run and plan.plan.role == "replica" and plan.plan.primary == "eu-1"
    assert plan.plan.node_has_data and not plan.plan.node_running
    assert plan.plan.label == proof.label and plan.plan.target.proof_point
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
        # The plan is made, and the approval awaited, under the cluster's change lock.
        with pytest.raises(PreconditionFailed, match="another runbook is changing cluster core.*restore run"):
            with cluster_lock("core", "switchover", wait_seconds=0):
                pass
        resume_flow_run(run_.id, run_input={"approver": "test", "reason": "not tonight", "confirm": "no"})
        thread.join(timeout=60)
        state = outcome["state"]
        assert state.is_failed()
        with pytest.raises(ApprovalRejected, match="rejected by test \\(not tonight\\): expected 'restore eu-2'"):
            state.result()
        assert (data_dir / "OLD_DATA_MARKER").exists() and not Path(plan.plan.staging_dir).exists()

        # What an approval approved must still be true after it: the plan is made again, and refused if it moved.
        outcome.clear()
        thread = threading.Thread(target=contextvars.copy_context().run, args=(run,), daemon=True)
        thread.start()
        run_ = poll_until(paused_run, timeout=60, interval=0.5, what="the second restore to pause for approval")
        (data_dir / "OLD_DATA_MARKER").rename(data_dir.parent / "eu-2-marker-moved-by-test")
        resume_flow_run(run_.id, run_input={"approver": "test", "reason": "tonight", "confirm": "restore eu-2"})
        thread.join(timeout=60)
    with pytest.raises(
        PreconditionFailed, match="changed while the restore waited for approval \\(node holds data: True -> False\\)"
    ):
        outcome["state"].result()
    assert not Path(plan.plan.staging_dir).exists()


def test_a_restore_that_fails_verification_leaves_the_old_directory_untouched(lab, proof, fourth_node):
    path, data_dir, _ = fourth_node
    staging = Path(f"{data_dir}.restore-{proof.label}")
    # A restore point the WAL archive never reaches: PostgreSQL stops before the target.
    with pytest.raises(VerificationFailed, match="stopped before reaching name regionops-no-such-point"):
        restore(
            RestoreParams(
                topology=path,
                node="eu-2",
                label=proof.label,
                target_type="name",
                target="regionops-no-such-point",
                require_approval=False,
                notify=False,
            )
        )
    assert [p.name for p in data_dir.iterdir()] == ["OLD_DATA_MARKER"]
    assert not staging.exists() and not Path(f"{staging}.pgbackrest").exists()


def test_restore_swaps_in_only_after_verification_and_streams(lab, proof, fourth_node):
    path, data_dir, port = fourth_node
    staging = Path(f"{data_dir}.restore-{proof.label}")
    insert_rows(lab, 10, "before-restore-")
    # While it runs, the application keeps writing and a watch counts writable primaries.
    with ha.watching_primaries(lab) as watch, ha.writing(lab) as writer:
        result = restore(
            RestoreParams(
                topology=path, node="eu-2", label=proof.label, require_approval=False, keep_old=True, notify=False
            )
        )
    assert watch.looks > 1 and not watch.seen_two, watch.seen_two
    assert result.verified_at is not None and result.swapped_at is not None
    assert result.verified_at < result.swapped_at
    tables = {t.table: t for t in result.tables}
    assert tables[TABLE].compared and tables[TABLE].restored_rows == proof.fingerprint[TABLE].rows
    old = Path(result.activation.old_dir)
    assert (old / "OLD_DATA_MARKER").exists() and not (data_dir / "OLD_DATA_MARKER").exists()
    assert (data_dir / "PG_VERSION").exists() and not staging.exists()
    replica = SqlNode(ConnInfo("127.0.0.1", port, "app", "postgres", lab.cfg.pg_password()))
    poll_until(
        lambda: (
            replica.query("SELECT count(*) AS n FROM app_events")[0]["n"]
            == labtools.sql(lab, "eu-1").query("SELECT count(*) AS n FROM app_events")[0]["n"]
        ),
        timeout=30,
        what="eu-2 to catch up with eu-1",
    )
    states = {
        r["application_name"]
        for r in labtools.sql(lab, "eu-1").query("SELECT application_name FROM pg_stat_replication")
    }
    assert "eu-2" in states
    # Every write the application saw acknowledged is on the primary and on the restored replica.
    acked = writer.ids
    assert acked and acked <= ha.row_ids(lab, "eu-1")
    poll_until(
        lambda: acked <= {r["id"] for r in replica.query("SELECT id FROM app_events")},
        timeout=30,
        what="eu-2 to have every acknowledged write",
    )
    with cluster_lock("core", "probe", wait_seconds=5):  # the restore released the cluster's change lock
        pass
