"""The pgBackRest driver against the session lab over TLS: point-in-time restore, verify finds damage.

The lab archives every node's WAL through pgBackRest (repo1 in eu's bucket, repo2 in
us's); these tests take a real backup, restore it to a point in time into a scratch
directory and start it on a free port, and damage a repository object with boto3.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest

from regionops.backup.scratch import free_port, prepare_empty_dir, remove_dir, start_instance, stop_instance
from regionops.drivers.aws import s3_client
from regionops.drivers.pgbackrest import PgBackRest
from regionops.drivers.pgconf import set_auto_conf, write_hba
from regionops.drivers.postgres import ConnInfo, SqlNode
from regionops.errors import PreconditionFailed, VerificationFailed
from regionops.lab.config import LAB_CLUSTER, LAB_PRIMARY
from regionops.waiting import poll_until
from tests.labtools import sql

TABLE = "pitr_rows"


def insert(node: SqlNode, ids: range) -> None:
    for i in ids:  # one commit per row: each has its own commit time
        node.query(f"INSERT INTO {TABLE} (id) VALUES (%s)", (i,))


def start_scratch(lab, data_dir: Path) -> ConnInfo:
    """Start a restored directory as a private instance on a free loopback port."""
    port = free_port()
    os_user = lab.cfg.os_user
    set_auto_conf(
        data_dir,
        {
            "port": str(port),
            "listen_addresses": "127.0.0.1",
            "cluster_name": "pitr-scratch",
            "unix_socket_directories": "",
            "primary_conninfo": None,
            "primary_slot_name": None,
        },
        os_user,
    )
    write_hba(data_dir, ["host all postgres 127.0.0.1/32 trust"], os_user)
    start_instance(data_dir, data_dir.parent / "scratch.log", os_user, timeout=120)
    return ConnInfo("127.0.0.1", port, "app", "postgres")


def test_point_in_time_restore_brings_back_every_row_before_the_drop_and_none_after(lab):
    topo = lab.topology()
    driver = PgBackRest.for_node(topo, LAB_CLUSTER, LAB_PRIMARY)
    primary = sql(lab, LAB_PRIMARY)
    primary.query(f"DROP TABLE IF EXISTS {TABLE}")
    primary.query(f"CREATE TABLE {TABLE} (id int PRIMARY KEY)")
    insert(primary, range(1, 51))

    backup = driver.backup("full", describe=True)
    assert backup.backup is not None and backup.backup.type == "full" and backup.backup.label == backup.label, (
        backup.sentence()
    )

    insert(primary, range(51, 101))
    target = primary.query("SELECT clock_timestamp()::text AS t")[0]["t"]  # after row 100 committed
    time.sleep(0.05)
    insert(primary, range(101, 121))  # committed after the target: must not come back
    primary.query(f"DROP TABLE {TABLE}")
    driver.check()  # switches WAL and waits until it is archived in every repository

    scratch = Path(tempfile.mkdtemp(prefix="regionops-pitr-", dir=lab.cfg.pg_dir))
    scratch.chmod(0o755)  # PostgreSQL's OS user must reach the data directory inside
    data_dir = scratch / "data"
    try:
        prepare_empty_dir(data_dir, lab.cfg.os_user)
        restored = driver.restore(data_dir, target_type="time", target=target, target_action="promote")
        assert f"time {target}" in restored.sentence()
        info = start_scratch(lab, data_dir)
        node = SqlNode(info)
        poll_until(
            lambda: not node.query("SELECT pg_is_in_recovery() AS r")[0]["r"],
            timeout=60,
            what="the restored instance to promote at the target",
        )
        ids = [r["id"] for r in node.query(f"SELECT id FROM {TABLE} ORDER BY id")]
        assert ids == list(range(1, 101))
        with pytest.raises(PreconditionFailed, match="not empty"):
            driver.restore(data_dir, target_type="time", target=target)
    finally:
        stop_instance(data_dir, lab.cfg.os_user, mode="immediate")
        remove_dir(scratch, lab.cfg.os_user)


def test_verify_names_a_damaged_repository_object_and_passes_once_it_is_repaired(lab):
    topo = lab.topology()
    driver = PgBackRest.for_node(topo, LAB_CLUSTER, LAB_PRIMARY)
    driver.check()  # at least one WAL segment in every repository
    repo = driver.plan.repository("us")  # the copy repository: the session's repo1 stays untouched
    s3 = s3_client(topo, repo.aws_region)
    prefix = f"{repo.path.strip('/')}/archive/{LAB_CLUSTER}/"
    keys = [
        o["Key"] for o in s3.list_objects_v2(Bucket=repo.bucket, Prefix=prefix)["Contents"] if o["Key"].endswith(".lz4")
    ]
    key = sorted(keys)[-1]
    original = s3.get_object(Bucket=repo.bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=repo.bucket, Key=key, Body=original[:-64] + b"\0" * 64)
    try:
        with pytest.raises(VerificationFailed) as err:
            driver.verify(repo=repo.index)
        segment = Path(key).name.split("-")[0]
        assert segment in str(err.value), str(err.value)
    finally:
        s3.put_object(Bucket=repo.bucket, Key=key, Body=original)
