"""The shared fence store against a real moto server over HTTP: create-only records, first fence wins."""

from __future__ import annotations

import pytest

from regionops.drivers.objectstore import ObjectExists, S3ObjectStore
from regionops.errors import PreconditionFailed
from regionops.ha.fencing import FenceMarker, Fencer, FenceStore, home_bucket
from regionops.ha.writer import switch_writer
from regionops.lsn import Lsn
from regionops.topology import Topology
from tests.unit.test_ha_decisions import FakeTraffic
from tests.unit.test_objectstore import endpoint, new_bucket, store, topology  # noqa: F401 - fixtures

FIRST = Fencer(
    runbook="failover",
    run_name="brave-owl",
    run_id="r1",
    run_url="http://ui/runs/flow-run/r1",
    worker_region="us",
    worker_host="worker-us-1",
)
SECOND = Fencer(runbook="failover", run_name="calm-fox", run_id="r2", worker_region="apac", worker_host="w-apac")


@pytest.fixture
def fences(store: S3ObjectStore) -> FenceStore:  # noqa: F811 - the imported fixture
    bucket = new_bucket(store)  # a bucket per test: a clean fence store
    return FenceStore(store, lambda cluster: bucket)


def marker(by: Fencer, node: str = "eu-1", **kw) -> FenceMarker:
    return FenceMarker(**{"cluster": "core", "node": node, "stopped": False, "reason": "failed over", "by": by, **kw})


def test_the_home_bucket_is_the_bucket_of_the_highest_priority_nodes_region(topology: Topology) -> None:  # noqa: F811
    assert home_bucket(topology, "core") == "unit-eu"


def test_a_create_only_write_refuses_to_overwrite(store: S3ObjectStore) -> None:  # noqa: F811
    bucket = new_bucket(store)
    store.put_bytes(bucket, "k", b"first", if_absent=True)
    with pytest.raises(ObjectExists, match="already exists"):
        store.put_bytes(bucket, "k", b"second", if_absent=True)
    assert store.get_bytes(bucket, "k") == b"first"


def test_the_first_fence_wins_and_a_second_run_keeps_it(fences: FenceStore) -> None:
    assert fences.fenced("core") == {}
    ours = fences.mark(marker(FIRST, last_lsn=Lsn.parse("0/5000000"), timeline=1))
    assert ours.created and ours.location.endswith("/fences/core/eu-1.json")
    theirs = fences.mark(marker(SECOND, stopped=True))
    assert not theirs.created and theirs.marker.by == FIRST and not theirs.marker.stopped
    assert "already fenced (the earlier record" in theirs.sentence()
    # A retried request that finds its own record counts as its own.
    assert fences.mark(ours.marker).created
    stored = fences.get("core", "eu-1")
    assert stored is not None and stored.by == FIRST and stored.last_lsn == Lsn.parse("0/5000000")
    text = stored.sentence()
    assert "by failover run brave-owl (http://ui/runs/flow-run/r1) on worker-us-1 in region us" in text
    assert "could not be stopped" in text


def test_clearing_keeps_the_record_with_who_cleared_it_and_why(fences: FenceStore) -> None:
    fences.mark(marker(FIRST))
    fences.mark(marker(FIRST, node="apac-1"))
    assert sorted(fences.fenced("core")) == ["apac-1", "eu-1"]
    cleared = fences.clear("core", "eu-1", by=SECOND, reason="it streams from us-1 again")
    assert cleared is not None and cleared.marker.by == FIRST
    assert "/fences/core/cleared/eu-1-" in cleared.archived_at
    assert "cleared the fence of eu-1 (it streams from us-1 again) by failover run calm-fox" in cleared.sentence()
    assert sorted(fences.fenced("core")) == ["apac-1"]  # the archive is not a fence
    assert fences.get("core", "eu-1") is None and fences.clear("core", "eu-1", by=SECOND, reason="x") is None
    assert fences.mark(marker(SECOND)).created  # a new fence after a clear is a new record


def test_the_writer_record_never_points_at_a_fenced_node(fences: FenceStore) -> None:
    from tests.unit.test_decisions import TOPO

    traffic = FakeTraffic()
    fences.mark(marker(FIRST, stopped=True))
    with pytest.raises(PreconditionFailed, match="refusing to point the writer record at eu-1"):
        switch_writer(TOPO, "core", "eu-1", fences=fences, traffic=traffic)
    assert traffic.records == {}
    moved = switch_writer(TOPO, "core", "us-1", fences=fences, traffic=traffic)
    assert moved.node == "us-1" and moved.target == TOPO.node_dns_name("core", "us-1")
