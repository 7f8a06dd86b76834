"""The etcd seam against a real three-member etcd cluster (the lab's quorum component, on loopback)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from regionops.drivers.etcd import EtcdClient, QuorumUnavailable, prefix_end
from regionops.lab.config import LAB_REGIONS, LabConfig
from regionops.lab.processes import stop
from regionops.lab.quorum import LabQuorum, member_name, timing
from regionops.waiting import poll_until


@pytest.fixture(scope="module")
def quorum() -> Iterator[LabQuorum]:
    lab_dir = Path(tempfile.mkdtemp(prefix="regionops-test-etcd-"))
    os.chmod(lab_dir, 0o755)
    members = LabQuorum(LabConfig.create(lab_dir, free_ports=True))
    try:
        members.start(lambda _: None)
        yield members
    finally:
        members.stop(lambda _: None)
        shutil.rmtree(lab_dir, ignore_errors=True)


@pytest.fixture
def kv(quorum: LabQuorum) -> Iterator[EtcdClient]:
    client = EtcdClient(list(quorum.endpoints().values()), timeout=2)
    yield client
    client.close()


def test_a_create_only_write_keeps_the_first_value_and_returns_it(kv: EtcdClient) -> None:
    assert kv.create("/t/create/a", "first") == (True, None)
    created, existing = kv.create("/t/create/a", "second")
    assert not created and existing is not None and existing.value == b"first"
    assert kv.get("/t/create/a").value == b"first"  # type: ignore[union-attr]


def test_a_compare_and_swap_refuses_a_stale_revision(kv: EtcdClient) -> None:
    kv.put("/t/cas/k", "v1")
    seen = kv.get("/t/cas/k")
    assert seen is not None
    assert kv.replace("/t/cas/k", "v2", seen.mod_revision)[0]
    ok, now = kv.replace("/t/cas/k", "v3", seen.mod_revision)  # a holder with the old revision
    assert not ok and now is not None and now.value == b"v2"
    assert not kv.delete("/t/cas/k", mod_revision=seen.mod_revision) and kv.get("/t/cas/k") is not None
    assert kv.delete("/t/cas/k", mod_revision=now.mod_revision) and kv.get("/t/cas/k") is None


def test_a_move_archives_and_deletes_in_one_step_only_if_unchanged(kv: EtcdClient) -> None:
    kv.put("/t/move/fence", "f1")
    first = kv.get("/t/move/fence")
    assert first is not None
    kv.put("/t/move/fence", "f2")  # re-written after we read it
    assert not kv.move(first, "/t/move/archive/1", "cleared f1")
    assert kv.get("/t/move/archive/1") is None and kv.get("/t/move/fence").value == b"f2"  # type: ignore[union-attr]
    current = kv.get("/t/move/fence")
    assert current is not None and kv.move(current, "/t/move/archive/2", "cleared f2")
    assert kv.get("/t/move/fence") is None and kv.get("/t/move/archive/2").value == b"cleared f2"  # type: ignore[union-attr]
    assert [k.key for k in kv.get_prefix("/t/move/")] == ["/t/move/archive/2"]


def test_a_key_on_a_lease_lives_while_it_is_kept_alive_and_vanishes_when_it_expires(kv: EtcdClient) -> None:
    lease = kv.grant(3)
    assert lease.ttl == 3
    kv.put("/t/lease/holder", "me", lease=lease.id)
    assert kv.keepalive(lease.id) == 3 and kv.get("/t/lease/holder").lease == lease.id  # type: ignore[union-attr]
    # Not kept alive: the quorum deletes the key on its own once the TTL ran out.
    poll_until(lambda: kv.get("/t/lease/holder") is None, timeout=10, interval=0.2, what="the lease to expire")
    assert kv.keepalive(lease.id) == 0  # an expired lease cannot be renewed
    second = kv.grant(30)
    kv.put("/t/lease/other", "x", lease=second.id)
    kv.revoke(second.id)
    assert kv.get("/t/lease/other") is None
    kv.revoke(second.id)  # revoking a lease that is gone is not an error


def test_prefix_end_selects_exactly_the_prefix() -> None:
    assert prefix_end("/a/b/") == "/a/b0"


def test_the_members_are_timed_for_the_lab_wan_and_a_dead_endpoint_is_skipped(quorum: LabQuorum) -> None:
    assert timing(quorum.cfg) == (100, 1000)  # loopback: etcd's defaults
    dead = "http://127.0.0.1:9"  # nothing listens there
    client = EtcdClient([dead, *quorum.endpoints().values()], timeout=1)
    assert client.put("/t/skip", "ok") > 0 and client.get("/t/skip").value == b"ok"  # type: ignore[union-attr]


def test_a_member_without_the_majority_answers_nothing_and_the_client_says_so(quorum: LabQuorum) -> None:
    """Two of three members stopped: the last one has no quorum, so it neither reads nor writes."""
    endpoints = quorum.endpoints()
    lone = EtcdClient([endpoints["apac"]], timeout=1)
    try:
        for region in ("eu", "us"):
            stop(quorum.cfg.lab_dir, member_name(region))
        with pytest.raises(QuorumUnavailable, match="no etcd member answered for the quorum"):
            lone.get("/t/minority")  # no stale read from a member that lost the majority
        with pytest.raises(QuorumUnavailable, match="no etcd member answered for the quorum"):
            lone.put("/t/minority", "unknown")  # not acknowledged (raft may still commit it later)
        assert not lone.member_health(endpoints["apac"])
    finally:
        quorum.start(lambda _: None, regions=["eu", "us"])
    after = EtcdClient(list(endpoints.values()), timeout=2)
    assert all(after.member_health(url) for url in endpoints.values())
    assert after.put("/t/minority", "majority back") > 0
    assert sorted(quorum.endpoints()) == sorted(LAB_REGIONS)


def test_a_lab_made_before_the_quorum_store_gets_its_members_ports_and_topology_section(tmp_path) -> None:
    import json

    from regionops.lab.config import LabPorts
    from regionops.lab.topology_file import topology_document
    from regionops.topology import parse_topology

    old = LabConfig(lab_dir=tmp_path, ports=LabPorts.from_base(20000)).model_dump(mode="json")
    old["ports"].pop("etcd")
    old["ports"].pop("etcd_peers")
    (tmp_path / "lab.json").write_text(json.dumps(old))
    cfg = LabConfig.load(tmp_path)
    assert cfg is not None and cfg.ports.etcd and cfg.ports.etcd_peers
    assert sorted(cfg.ports.etcd) == sorted(LAB_REGIONS)
    assert len(set(cfg.ports.all().values())) == len(cfg.ports.all())  # no port taken twice
    topo = parse_topology(topology_document(cfg))
    assert topo.quorum is not None and topo.quorum.endpoints["eu"] == f"http://127.0.0.1:{cfg.ports.etcd['eu']}"
