"""The lab's S3/Route53 server keeps its state across restarts: real process, real HTTP, real signals."""

from __future__ import annotations

import io
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from regionops.drivers.aws import s3_client
from regionops.drivers.objectstore import ObjectNotFound, objectstore_for
from regionops.drivers.traffic import traffic_for
from regionops.lab.awsserver import FORMAT
from regionops.lab.processes import port_open, wait_for_port
from regionops.topology import Topology, parse_topology
from regionops.waiting import poll_until
from tests.unit.test_objectstore import free_port

ZONE, RECORD = "lab.example.internal.", "writer.core.lab.example.internal."


def topology_for(port: int) -> Topology:
    return parse_topology(
        {
            "name": "unit",
            "regions": {
                "eu": {
                    "aws_region": "eu-west-1",
                    "residency": "eu",
                    "app_url": "http://eu",
                    "bucket": "persist-eu",
                    "work_pool": "eu",
                }
            },
            "clusters": {
                "core": {
                    "nodes": {"eu-1": {"region": "eu", "host": "127.0.0.1", "port": 5432, "data_dir": "/d"}},
                    "writer_record": RECORD,
                }
            },
            "traffic": {"route53_zone": ZONE},
            "aws": {"endpoint_url": f"http://127.0.0.1:{port}"},
        }
    )


@contextmanager
def server(state: Path, port: int, quiet: float = 60) -> Iterator[subprocess.Popen]:
    """The server as the lab runs it, in its own process; SIGTERM on leaving unless already gone."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "regionops.lab.awsserver",
            "--port",
            str(port),
            "--state-file",
            str(state),
            "--quiet-seconds",
            str(quiet),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_port(port, timeout=30, what="awsserver", pid=proc.pid)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        poll_until(lambda: not port_open(port), timeout=10, what=f"port {port} free")


def raw_meta(topo: Topology, key: str) -> dict:
    return s3_client(topo, "eu-west-1").head_object(Bucket="persist-eu", Key=key)["Metadata"]


def test_graceful_stop_keeps_buckets_versions_uploads_and_records(tmp_path):
    state, port = tmp_path / "aws.state", free_port()
    topo = topology_for(port)
    with server(state, port) as proc:
        store = objectstore_for(topo)
        store.ensure_bucket("persist-eu", "eu-west-1")
        raw = s3_client(topo, "eu-west-1")
        raw.put_bucket_versioning(Bucket="persist-eu", VersioningConfiguration={"Status": "Enabled"})
        store.put_bytes("persist-eu", "fence/eu-1", b"first")
        store.put_bytes("persist-eu", "fence/eu-1", b"second", metadata={"by": "test"})
        assert raw_meta(topo, "fence/eu-1") == {"by": "test"}
        store.put_bytes("persist-eu", "backups/big", os.urandom(3 * 1024 * 1024))
        upload = raw.create_multipart_upload(Bucket="persist-eu", Key="backups/partial")["UploadId"]
        raw.upload_part(
            Bucket="persist-eu",
            Key="backups/partial",
            UploadId=upload,
            PartNumber=1,
            Body=io.BytesIO(b"x" * (5 * 1024 * 1024)),
        )
        traffic = traffic_for(topo)
        traffic.ensure_zone(ZONE)
        traffic.set_record(ZONE, RECORD, "us-1.core.lab.example.internal.", ttl=5)
        big = store.get_bytes("persist-eu", "backups/big")
        assert not state.exists()  # the checkpoint waits for 60 quiet seconds: only the stop saves
    assert proc.returncode == 0
    assert state.exists()

    with server(state, port):
        store = objectstore_for(topo)
        assert store.bucket_status("persist-eu").region == "eu-west-1"
        assert store.get_bytes("persist-eu", "fence/eu-1") == b"second"
        assert raw_meta(topo, "fence/eu-1") == {"by": "test"}
        assert store.get_bytes("persist-eu", "backups/big") == big
        raw = s3_client(topo, "eu-west-1")
        versions = raw.list_object_versions(Bucket="persist-eu", Prefix="fence/")["Versions"]
        assert len(versions) == 2
        oldest = next(v for v in versions if not v["IsLatest"])
        body = raw.get_object(Bucket="persist-eu", Key="fence/eu-1", VersionId=oldest["VersionId"])["Body"].read()
        assert body == b"first"
        assert store.pending_uploads("persist-eu", "backups/") == [("backups/partial", upload)]
        record = traffic_for(topo).get_record(ZONE, RECORD)
        assert record is not None and record.values == ["us-1.core.lab.example.internal."]


def test_a_hard_kill_keeps_what_the_last_checkpoint_saved(tmp_path):
    state, port = tmp_path / "aws.state", free_port()
    topo = topology_for(port)
    with server(state, port, quiet=0.3) as proc:
        store = objectstore_for(topo)
        store.ensure_bucket("persist-eu", "eu-west-1")
        store.put_bytes("persist-eu", "backups/manifest.json", b"{}")
        written = time.time()
        # A checkpoint written AFTER the put (on a loaded machine one may come between the two writes).
        poll_until(
            lambda: state.exists() and state.stat().st_mtime > written,
            timeout=10,
            interval=0.1,
            what="a checkpoint after the writes",
        )
        proc.send_signal(signal.SIGKILL)
    with server(state, port):
        assert objectstore_for(topo).get_bytes("persist-eu", "backups/manifest.json") == b"{}"
        with pytest.raises(ObjectNotFound):
            objectstore_for(topo).get_bytes("persist-eu", "backups/never-written")


def test_a_state_file_from_another_moto_version_is_refused_naming_it(tmp_path):
    state, port = tmp_path / "aws.state", free_port()
    state.write_bytes(pickle.dumps({"format": FORMAT, "moto": "0.0.1", "services": {}}))
    proc = subprocess.run(
        [sys.executable, "-m", "regionops.lab.awsserver", "--port", str(port), "--state-file", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert f"{state} was written by moto 0.0.1" in proc.stderr and "move the file aside" in proc.stderr
    assert state.read_bytes()  # left as it was
    assert not port_open(port)
