"""The backup runbook on pgBackRest, against the session lab (repo1 in eu's bucket, repo2 in us's).

A full then an incremental backup through the runbook, checked with pgBackRest's own
``info`` and the proof records in both buckets; a backup killed half-way is never listed
and the next run succeeds; residency refuses a US repository of an EU cluster before
pgBackRest runs; a second backup waits, then refuses; a dry run changes nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from flows.backup import BackupParams, backup
from regionops.backup.proof import ProofStore
from regionops.drivers.aws import s3_client
from regionops.drivers.backupsql import BackupSql
from regionops.drivers.pgbackrest import PgBackRest
from regionops.drivers.pgtools import as_user
from regionops.errors import PreconditionFailed, ResidencyViolation, TopologyError
from regionops.lab.config import LAB_CLUSTER, LAB_PRIMARY
from regionops.runbook.locks import backup_lock
from regionops.topology import load_topology
from regionops.waiting import poll_until
from tests import ha_tools, labtools

pytestmark = pytest.mark.lab


def run(lab, topology: str | None = None, **overrides):
    """One backup run; its result and flow run id.

    verify reads every file of every backup with one request each, and moto answers each in
    tens of ms: more processes than the lab's two keep it to seconds.
    """
    params = BackupParams(
        **(
            {"topology": topology or str(lab.cfg.topology_path), "lock_wait_seconds": 60, "verify_processes": 8}
            | overrides
        )
    )
    state = backup(params, return_state=True)
    return state.result(), ha_tools.run_id(state)


def driver(lab) -> PgBackRest:
    """pgBackRest of the primary, run directly (not through the runbook) to check what it lists."""
    return PgBackRest.for_node(lab.topology(), LAB_CLUSTER, LAB_PRIMARY)


def labels(lab, repo: int) -> list[str]:
    return [b.label for b in driver(lab).info(repo=repo).backups]


def bucket_keys(lab) -> dict[str, set[str]]:
    """Every object key in every lab bucket but the WAL archive (PostgreSQL's archiver adds to it any time)."""
    topo = lab.topology()
    out = {}
    for region in topo.regions.values():
        s3 = s3_client(topo, region.aws_region)
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=region.bucket)
        out[region.bucket] = {
            o["Key"] for page in pages for o in page.get("Contents", []) if "/archive/" not in o["Key"]
        }
    return out


def row_counts(lab, tables: list[str]) -> dict[str, int]:
    return {t: f["rows"] for t, f in BackupSql(labtools.sql(lab, LAB_PRIMARY).info).fingerprints(tables).items()}


def insert_events(lab, n: int) -> None:
    labtools.sql(lab, LAB_PRIMARY).query(
        "INSERT INTO app_events (region, payload) SELECT 'eu', 'backup-runbook-' || g FROM generate_series(1, %s) g",
        (n,),
    )


@pytest.fixture(scope="module")
def full_then_incr(lab):
    """A full backup (not verified: one verified run is enough here), 300 more rows, then an incremental one."""
    full, full_run = run(lab, backup_type="full", verify=False)
    insert_events(lab, 300)
    incr, incr_run = run(lab)
    return (full, full_run), (incr, incr_run)


def test_full_then_incr_land_in_every_repository_with_their_proof_and_are_reported(lab, full_then_incr):
    (full, full_run), (incr, incr_run) = full_then_incr
    topo = lab.topology()
    tables = topo.clusters[LAB_CLUSTER].backup.fingerprint_tables
    assert full.label.endswith("F") and incr.label.endswith("I"), (full.sentence(), incr.sentence())
    assert [(p.repository.index, p.repository.region) for p in incr.repos] == [(1, "eu"), (2, "us")]
    assert incr.verified and all(p.verify and p.verify.ok for p in incr.repos)
    assert full.verified is None and "not verified" in full.sentence()
    assert incr.repos[1].backup.backup.prior == full.repos[1].backup.label  # repo2's incr follows repo2's full

    for result in (full, incr):
        for part in result.repos:
            # pgBackRest itself lists each repository's new backup, with the type the runbook reports.
            listed = driver(lab).info(repo=part.repository.index).backups
            entry = next(b for b in listed if b.label == part.backup.label)
            assert entry.type == part.taken_type == result.repos[0].taken_type and not entry.error
            # ...and beside it, in that repository's bucket, the proof record of the fingerprint point.
            proof = ProofStore.for_cluster(topo, LAB_CLUSTER, part.repository.region).proof(part.backup.label)
            assert proof is not None and proof.restore_point == f"regionops-core-{result.label}"
            assert proof.fingerprint == result.proof.fingerprint

    # The fingerprint counts what the primary held: now (nothing wrote since) and 300 rows apart.
    assert {t: f.rows for t, f in incr.proof.fingerprint.items()} == row_counts(lab, tables)
    assert incr.proof.fingerprint["public.app_events"].rows == full.proof.fingerprint["public.app_events"].rows + 300

    report = ha_tools.report_markdown(incr_run)
    assert incr.label in report and "regionops-lab-eu" in report and "regionops-lab-us" in report
    assert "passed" in report  # the verify column
    slack = ha_tools.slack_texts(lab)
    assert incr.sentence() in slack and full.sentence() in slack
    assert f"incr backup {incr.label} of core from eu-1 into repo1 (eu), repo2 (us)" in incr.sentence()


def test_a_backup_killed_half_way_is_never_listed_and_the_next_run_succeeds(lab, full_then_incr, tmp_path):
    topo = lab.topology()
    pgbr = driver(lab)
    repo = pgbr.plan.repository("us")  # the kill happens in repo2
    before = set(labels(lab, repo.index))
    s3 = s3_client(topo, repo.aws_region)
    prefix = f"{repo.path.strip('/')}/backup/{LAB_CLUSTER}/"

    def new_backup_dirs() -> set[str]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=repo.bucket, Prefix=prefix)
        keys = {o["Key"][len(prefix) :] for page in pages for o in page.get("Contents", [])}
        return {k.split("/", 1)[0] for k in keys if "/" in k} - before - {"backup.history"}

    out = tmp_path / "pgbackrest.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            as_user(pgbr.argv("backup", "--type=full", f"--repo={repo.index}"), lab.cfg.os_user),
            cwd="/",
            start_new_session=True,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:

        def half_way() -> str | None:
            assert proc.poll() is None, f"the backup ended before it could be killed: {out.read_text()}"
            return min(new_backup_dirs(), default=None)

        # Half-way: the new backup's directory is being written in the bucket.
        killed = poll_until(half_way, timeout=60, interval=0.05, what="the killed backup to start writing")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL, out.read_text()
    assert killed not in labels(lab, repo.index)  # never listed, let alone as good
    assert set(labels(lab, repo.index)) == before

    nxt, _ = run(lab, repos=["us"])
    (part,) = nxt.repos
    listed = labels(lab, repo.index)
    assert part.backup.label in listed and part.verify.ok
    # An incr cannot resume a killed full: pgBackRest removed the partial directory before its backup.
    assert part.backup.label != killed and killed not in listed
    assert killed not in new_backup_dirs(), new_backup_dirs()


def eu_variant(lab, tmp_path: Path, copy_to: list[str]) -> str:
    """Cluster core as an EU-resident cluster ``eucore`` (only eu-1), written to a topology file."""
    doc = yaml.safe_load(lab.cfg.topology_path.read_text())
    cluster = doc["clusters"].pop("core")
    cluster["residency"] = ["eu"]
    cluster["nodes"] = {"eu-1": cluster["nodes"]["eu-1"]}
    cluster["backup"]["copy_to"] = copy_to
    doc["clusters"] = {"eucore": cluster}
    path = tmp_path / "eucore.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_an_eu_cluster_is_refused_a_us_repository_before_pgbackrest_runs(lab, tmp_path):
    before = bucket_keys(lab)
    with pytest.raises(TopologyError, match=r"clusters.eucore.backup.copy_to\[0\].*region 'us'"):
        load_topology(eu_variant(lab, tmp_path, ["us"]))
    path = eu_variant(lab, tmp_path, [])
    with pytest.raises(ResidencyViolation) as err:
        run(lab, topology=path, repos=["eu", "us"], notify=True)
    assert "clusters.eucore.residency = [eu]" in str(err.value) and "region us" in str(err.value)
    assert bucket_keys(lab) == before  # not one object, in any bucket
    assert "clusters.eucore.residency = [eu]" in ha_tools.slack_texts(lab)  # the refusal is reported


def test_a_second_backup_waits_then_refuses_visibly_and_a_dry_run_changes_nothing(lab):
    before = bucket_keys(lab)
    with backup_lock(LAB_CLUSTER, wait_seconds=5):  # another backup of core is running
        started = time.monotonic()
        state = backup(BackupParams(topology=str(lab.cfg.topology_path), lock_wait_seconds=3), return_state=True)
        waited = time.monotonic() - started
        assert state.is_failed() and waited >= 3
        with pytest.raises(PreconditionFailed, match="another backup of cluster core is running"):
            state.result()
        # A dry run needs no lock: it plans while the other backup runs.
        dry, _ = run(lab, backup_type="diff", dry_run=True)
    assert dry.sentence() == (
        "dry run: would take a diff backup of core from eu-1 into repo1 (eu), repo2 (us), "
        "then verify; nothing was changed"
    )
    assert dry.repos == [] and dry.label is None
    assert bucket_keys(lab) == before
