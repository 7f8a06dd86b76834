"""The lab's regions as failure domains: a real WAN (realistic delays), partitions, whole-region outages.

One lab with ``--wan realistic``, its Prefect server on the host and its node-step
executors in their regions' namespaces.  Every reachability check is made from inside a region's namespace, as a
client there would; the host stands for the operator's VPN.
"""

from __future__ import annotations

import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from regionops.drivers.etcd import EtcdClient, QuorumUnavailable
from regionops.lab.config import LAB_CLUSTER
from regionops.lab.faults import LabFaultInjector
from regionops.lab.lab import Lab
from regionops.lab.prefect_server import lab_env, prefect_healthy
from regionops.lab.processes import running_pid
from regionops.lab.region_faults import heal_regions, inject_ops_outage, inject_region_fault
from regionops.lab.wan import OPS_SITE, REALISTIC_RTT_MS, existing_namespaces, leftovers
from regionops.waiting import poll_until
from tests import ha_tools as ha
from tests.conftest import started_lab

REGIONS = ("eu", "us", "apac")

_PROBE = """
import socket, sys, time
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    socket.create_connection((host, port), timeout=timeout).close()
    print("open")
except OSError as exc:
    print(type(exc).__name__)
"""


@pytest.fixture(scope="module")
def wan_lab() -> Iterator[Lab]:
    with started_lab(wan="realistic") as lab:
        yield lab
        heal_regions(lab)


def reaches(lab: Lab, region: str, host: str, port: int, timeout: float = 1.5) -> bool:
    """True when a client inside ``region``'s namespace connects to ``host:port`` within ``timeout``."""
    netns = lab.cfg.netns(region)
    assert netns
    out = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", _PROBE, host, str(port), str(timeout)],
        capture_output=True,
        text=True,
        timeout=timeout + 10,
    ).stdout.strip()
    return out == "open"


def host_reaches(host: str, port: int) -> bool:

    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


def app_url(lab: Lab, region: str) -> str:
    return f"http://{lab.cfg.region_host(region)}:{lab.cfg.ports.apps[region]}"


def timed_request(url: str, body: dict | None = None) -> tuple[float, dict]:
    """(seconds, answer) of one GET (or POST of ``body``) to the app."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(req, timeout=20) as resp:  # noqa: S310 - the lab's own app
        answer = json.loads(resp.read())
    return time.perf_counter() - started, answer


def test_an_apac_write_costs_an_eu_apac_round_trip_more_than_a_local_read_and_replication_is_measured(wan_lab):
    lab = wan_lab
    apac, eu = app_url(lab, "apac"), app_url(lab, "eu")
    writes = [timed_request(f"{apac}/write", {"payload": f"apac-{i}"}) for i in range(5)]
    reads = [timed_request(f"{apac}/read?id={writes[0][1]['id']}") for _ in range(5)]
    assert all(answer["node"] == "eu-1" for _, answer in writes), writes  # the writer is in eu
    assert all(answer["node"] == "apac-1" for _, answer in reads), reads  # reads stay in apac
    write_p50 = statistics.median(t for t, _ in writes)
    read_p50 = statistics.median(t for t, _ in reads)
    eu_apac_rtt = REALISTIC_RTT_MS[frozenset({"eu", "apac"})] / 1000
    print(f"apac app: write p50 {write_p50 * 1000:.0f} ms, read p50 {read_p50 * 1000:.0f} ms")
    assert write_p50 - read_p50 >= 0.9 * eu_apac_rtt  # at least one round trip (5 % jitter allowed, twice)

    # A row written in eu: how long until the apac app serves it from apac-1 (measured, not assumed).
    _, written = timed_request(f"{eu}/write", {"payload": "read-after-write"})
    started = time.perf_counter()
    while True:
        try:
            _, seen = timed_request(f"{apac}/read?id={written['id']}")
            if seen.get("payload") == "read-after-write":
                break
        except urllib.error.HTTPError as exc:
            assert exc.code == 404, exc
        assert time.perf_counter() - started < 10, "the row never reached apac-1"
        time.sleep(0.01)
    visible_after = time.perf_counter() - started
    print(f"a row written in eu was served by the apac app {visible_after * 1000:.0f} ms later")
    # Replication crosses the ocean once: never faster than the one-way delay.
    assert visible_after >= 0.9 * eu_apac_rtt / 2


def test_lab_status_measures_every_round_trip_and_each_replicas_lag(wan_lab):
    lines = {c.name: c for c in wan_lab.status().components}
    for region in REGIONS:
        line = lines[f"region {region}"]
        assert line.healthy, line
        for other in REGIONS:
            if other == region:
                continue
            expected = REALISTIC_RTT_MS[frozenset({region, other})]
            measured = float(line.detail.split(f"{other} ", 1)[1].split(" ms", 1)[0])
            assert 0.85 * expected <= measured <= 1.3 * expected, (region, other, line.detail)
    for region in ("us", "apac"):
        assert "replica lag" in lines[f"region {region}"].detail, lines[f"region {region}"]


def test_a_partitioned_region_keeps_serving_itself_and_nothing_else_reaches_it(wan_lab):
    lab = wan_lab
    eu_host, eu1_port, app_port = lab.cfg.region_host("eu"), lab.cfg.ports.postgres["eu-1"], lab.cfg.ports.apps["eu"]
    # The witness: every node polled for writable primaries, and eu's app writing throughout.
    with ha.watching_primaries(lab) as watch, ha.writing(lab, region="eu") as writer:
        inject_region_fault(lab, "region-partition", "eu")
        try:
            assert reaches(lab, "eu", eu_host, eu1_port) and reaches(lab, "eu", eu_host, app_port)
            for region in ("us", "apac"):
                assert not reaches(lab, region, eu_host, eu1_port), f"{region} reached eu-1 through the partition"
                assert not reaches(lab, region, eu_host, app_port), f"{region} reached the eu app through the partition"
            assert host_reaches(eu_host, eu1_port)  # the operator's VPN still sees it
            _, written = timed_request(f"{app_url(lab, 'eu')}/write", {"payload": "written while cut off"})
            assert written["node"] == "eu-1"  # the partitioned primary keeps taking its region's writes
            # The quorum store: eu's member lost the majority and answers nothing; us and apac go on.
            members = lab.quorum.endpoints()
            with pytest.raises(QuorumUnavailable):
                EtcdClient([members["eu"]], timeout=1).get("/regionops/partition-test")
            # (10 s: when eu's member was the leader, us and apac elect a new one first)
            EtcdClient([members["us"]], timeout=10).put("/regionops/partition-test", "written by the majority")
        finally:
            notes = heal_regions(lab)
    assert any("restored the links of eu" in n for n in notes), notes
    # Back in the majority, eu's member catches up: it serves what was written without it.
    eu_member = EtcdClient([lab.quorum.endpoints()["eu"]], timeout=3)
    poll_until(
        lambda: eu_member.member_health(lab.quorum.endpoints()["eu"]), timeout=30, interval=0.3, what="etcd-eu back"
    )
    assert eu_member.get("/regionops/partition-test").value == b"written by the majority"  # type: ignore[union-attr]
    lost = writer.ids - ha.row_ids(lab, "eu-1")
    print(
        f"partition of eu: {len(writer.acked)} writes acknowledged by the eu app, {len(lost)} lost; "
        f"at most {watch.most} writable primary at once in {watch.looks} looks"
    )
    assert writer.acked and not lost  # nothing promoted elsewhere: eu-1 kept every write it acknowledged
    assert watch.most == 1 and not watch.seen_two
    for region in ("us", "apac"):
        assert reaches(lab, region, eu_host, eu1_port) and reaches(lab, region, eu_host, app_port)
    # eu's executor lost the control plane while cut off; it serves eu's node steps again after the heal.
    poll_until(lambda: lab.executors.serving("eu"), timeout=60, interval=0.5, what="eu's executor to serve again")


def test_a_region_outage_takes_its_bucket_endpoint_with_it(wan_lab):
    lab = wan_lab
    eu_host, s3_port = lab.cfg.region_host("eu"), lab.cfg.ports.moto
    assert all(reaches(lab, r, eu_host, s3_port) for r in REGIONS)
    # The witness: every node polled for writable primaries, and us's app writing (to eu-1) throughout.
    with ha.watching_primaries(lab) as watch, ha.writing(lab, region="us", interval=0.2) as writer:
        poll_until(lambda: writer.acked, timeout=20, interval=0.1, what="a first acknowledged write")
        inject_region_fault(lab, "region-outage", "eu")
        try:
            for region in REGIONS:
                assert not reaches(lab, region, eu_host, s3_port), f"eu's S3 endpoint answered from {region}"
            assert not host_reaches(eu_host, s3_port)
            assert not host_reaches(eu_host, lab.cfg.ports.postgres["eu-1"])  # the node is gone too
            assert reaches(lab, "us", lab.cfg.region_host("us"), s3_port)  # the other regions' endpoints are not
            assert running_pid(lab.cfg.lab_dir, "executor-eu") is None  # the region's hands are gone too
            # Its etcd member is gone with it; the quorum answers with us and apac.
            assert running_pid(lab.cfg.lab_dir, "etcd-eu") is None
            members = lab.quorum.endpoints()
            EtcdClient([members["eu"], members["us"], members["apac"]], timeout=10).put(
                "/regionops/outage-test", "2 of 3"
            )
        finally:
            heal_regions(lab)
            LabFaultInjector(lab.topology(), lab.cfg.lab_dir).heal(LAB_CLUSTER)
    lost = writer.ids - ha.row_ids(lab, "eu-1")
    print(
        f"outage of eu: {len(writer.acked)} writes acknowledged, {len(lost)} lost after the heal; "
        f"at most {watch.most} writable primary at once in {watch.looks} looks"
    )
    assert not lost  # eu-1's crash recovery kept every write it acknowledged (nothing was promoted)
    assert watch.most <= 1 and not watch.seen_two
    assert all(reaches(lab, r, eu_host, s3_port) for r in REGIONS)
    assert lab.observe_nodes()["eu-1"].role == "primary"
    assert lab.executors.serving("eu")  # heal started eu's executor again
    assert EtcdClient([lab.quorum.endpoints()["eu"]], timeout=3).get("/regionops/outage-test") is not None


def run_in_ops_site(lab: Lab, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``regionops ARGV`` run in the ops site's namespace, as production's control plane runs runbooks."""
    netns = lab.cfg.netns(OPS_SITE)
    assert netns
    # The API at the ops site's address; the run's log (its steps) on stderr, as a person sees it.
    env = {**os.environ, **lab_env(lab.cfg), "PREFECT_LOGGING_LEVEL": "INFO"}
    regionops = str(Path(sys.executable).parent / "regionops")
    return subprocess.run(
        ["ip", "netns", "exec", netns, regionops, *argv], capture_output=True, text=True, timeout=timeout, env=env
    )


def run_log(lab: Lab, flow_run_id: str) -> str:
    """Every log line of one flow run, as the Prefect API keeps them (oldest first)."""
    lines: list[str] = []
    while True:
        body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200, "offset": len(lines)}
        req = urllib.request.Request(
            f"http://{lab.cfg.control_host()}:{lab.cfg.ports.prefect}/api/logs/filter",
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=20) as resp:  # noqa: S310 - the lab's own API
            page = [entry["message"] for entry in json.loads(resp.read())]
        lines += page
        if len(page) < 200:
            return "\n".join(lines)


def drill_from_ops_site(lab: Lab, scenario: str, writer_region: str, interval: float) -> tuple[str, object, object]:
    """A DR drill of ``scenario`` started as production starts it, witnessed from the host.

    ``regionops run dr-drill`` starts the lab's deployment, which runs in the ops site (as the
    UI's or an alert's run would), and follows it; returns (the CLI's output and the run's own
    log, the watch, the writer).
    """
    regionops = str(Path(sys.executable).parent / "regionops")
    env = {**os.environ, **lab_env(lab.cfg)}
    with ha.watching_primaries(lab) as watch, ha.writing(lab, region=writer_region, interval=interval) as writer:
        poll_until(lambda: writer.acked, timeout=20, interval=0.1, what="a first acknowledged write")
        out = subprocess.run(
            [regionops, "run", "dr-drill", "--set", f"scenario={scenario}"],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
    started = re.search(r"started deployment dr-drill/lab: flow run \S+ \(([0-9a-f-]{36})\)", out.stderr)
    assert started, out.stderr[-2000:]

    # The run's log reaches the API in batches: wait for its last line.
    def whole_log() -> str | None:
        log = run_log(lab, started.group(1))
        return log if "Finished in state" in log else None

    log = poll_until(whole_log, timeout=30, interval=1, what="the drill run's whole log in the Prefect API")
    text = out.stdout + out.stderr + "\n" + log
    print(f"{scenario} drill started from the host, run in the ops site (exit {out.returncode}):")
    print("\n".join(line for line in text.splitlines() if f"{scenario} drill of" in line or "recovery:" in line))
    return text, watch, writer


def test_a_partition_drill_from_the_ops_site_reports_the_outage_it_measured(wan_lab):
    """Today's failover keeps its fences in eu's bucket, which a partition of eu cuts off: the drill says so."""
    lab = wan_lab
    text, watch, writer = drill_from_ops_site(lab, "region-partition", "eu", 0.1)
    assert "region-partition drill of core FAILED" in text, text[-3000:]
    # The failover (run from the ops site, cut off from eu) could not read the fence records in eu's bucket.
    assert "recovery: failover failed" in text and "regionops-lab-eu" in text, text[-3000:]
    outage = re.search(r"writes unavailable for (\d+\.\d+) s and still unavailable when the canary stopped", text)
    assert outage and float(outage.group(1)) > 10, text[-3000:]
    assert "RPO unknown: no node answers as primary" in text  # from the ops site, none did
    assert "steady state after the rollback: cluster core is healthy" in text  # the heal gave eu back
    # The witness: eu's app wrote to eu-1 throughout (cut off, it kept serving its region); nothing was promoted,
    # so eu-1 kept every write it acknowledged, and never were two primaries writable.
    lost = writer.ids - ha.row_ids(lab, "eu-1")
    print(f"witness: eu app {len(writer.acked)} acknowledged, {len(lost)} lost; at most {watch.most} writable primary")
    assert len(writer.acked) > 50 and not lost
    assert watch.most == 1 and not watch.seen_two
    assert lab.observe_nodes()["eu-1"].role == "primary"


def test_a_whole_region_outage_drill_from_the_ops_site_reports_the_outage_and_rolls_back(wan_lab):
    """eu's node, bucket, executor and worker are gone: today's failover cannot read its fences; the drill says so."""
    lab = wan_lab
    text, watch, writer = drill_from_ops_site(lab, "region-outage", "us", 0.2)
    assert "region-outage drill of core FAILED" in text, text[-3000:]
    assert "would take region eu out" in text
    assert "recovery: failover failed" in text and "regionops-lab-eu" in text, text[-3000:]
    assert re.search(r"writes unavailable for \d+\.\d+ s and still unavailable", text), text[-3000:]
    # The rollback healed the region and started eu-1 again (nobody else took writes), then resynced.
    assert "steady state after the rollback: cluster core is healthy" in text, text[-3000:]
    lost = writer.ids - ha.row_ids(lab, "eu-1")
    print(f"witness: us app {len(writer.acked)} acknowledged, {len(lost)} lost; at most {watch.most} writable primary")
    assert not lost and watch.most <= 1 and not watch.seen_two
    assert lab.observe_nodes()["eu-1"].role == "primary"
    for process in ("moto", "slack-sink", "prefect-server"):  # the drill's hands acted on the host, not in ops
        pid = running_pid(lab.cfg.lab_dir, process)
        assert pid is not None
        where = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True, text=True).stdout.strip()
        assert where in ("", lab.cfg.wan_plan().host_netns), (process, where)


def test_a_node_step_runs_inside_its_region_and_reaches_both_repositories_across_the_wan(wan_lab):
    from regionops.node import node_operator_for
    from regionops.node.pgbackrest_step import seam_driver

    lab = wan_lab
    topo = lab.topology()
    # pgbackrest info of apac-1: a node step on apac's executor, reading repo1 (eu's bucket) and repo2 (us's).
    info = seam_driver(topo, "core", "apac-1", node_operator_for(topo, "core")).info()
    assert info.stanza == "core" and [r.repo for r in info.repos] == [1, 2], info.sentence()
    for region in REGIONS:
        pid = running_pid(lab.cfg.lab_dir, f"executor-{region}")
        assert pid is not None
        where = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True, text=True).stdout.strip()
        assert where == lab.cfg.netns(region), (region, where)


def test_an_ops_outage_takes_the_control_plane_from_every_region_and_heal_brings_it_back(wan_lab):
    lab = wan_lab
    ops, api = lab.cfg.control_host(), lab.cfg.ports.prefect
    assert all(reaches(lab, r, ops, api) for r in REGIONS)
    serve = running_pid(lab.cfg.lab_dir, "prefect-serve")
    assert serve is not None  # the UI's runbooks run in the ops site
    where = subprocess.run(["ip", "netns", "identify", str(serve)], capture_output=True, text=True).stdout.strip()
    assert where == lab.cfg.netns(OPS_SITE)
    # The witness: every node polled for writable primaries, and us's app writing (to eu-1) throughout.
    with ha.watching_primaries(lab) as watch, ha.writing(lab, region="us", interval=0.2) as writer:
        poll_until(lambda: writer.acked, timeout=20, interval=0.1, what="a first acknowledged write")
        done = inject_ops_outage(lab)
        before = len(writer.acked)
        try:
            assert any("stopped prefect-server" in line for line in done), done
            for region in REGIONS:
                assert not reaches(lab, region, ops, api), f"{region} reached the Prefect API during an ops outage"
            assert not host_reaches(ops, api) and not prefect_healthy(lab.cfg)
            # The regions themselves keep working: us still reaches eu-1 across the WAN.
            assert reaches(lab, "us", lab.cfg.node_host("eu-1"), lab.cfg.ports.postgres["eu-1"])
            during = len(writer.acked) - before  # acknowledged while the control plane was gone
        finally:
            notes = heal_regions(lab)
    assert any("started the ops site again" in n for n in notes), notes
    lost = writer.ids - ha.row_ids(lab, "eu-1")
    print(
        f"ops outage: the us app's writes {len(writer.acked)} acknowledged ({during} while the control plane was "
        f"gone), {len(lost)} lost; at most {watch.most} writable primary at once in {watch.looks} looks"
    )
    # Losing the control plane changes nothing in the data path: writes go on, none is lost, one primary.
    assert during > 0 and not lost
    assert watch.most == 1 and not watch.seen_two
    assert prefect_healthy(lab.cfg) and all(reaches(lab, r, ops, api) for r in REGIONS)
    for region in REGIONS:
        poll_until(lambda r=region: lab.executors.serving(r), timeout=60, interval=0.5, what=f"{region}'s executor")


def test_up_again_changes_nothing_and_down_removes_every_namespace_link_and_rule(wan_lab):
    lab = wan_lab
    plan = lab.cfg.wan_plan()
    assert plan is not None
    before = existing_namespaces()
    status = lab.up(progress=lambda m: None)
    assert status.cluster_healthy, status.problems
    assert existing_namespaces() == before
    lab.down(progress=lambda m: None)
    assert leftovers(plan) == []
