"""Fault injection on the lab for tests, each undone when its `with` block ends.

Every helper restores the steady state (three nodes streaming from eu-1, writer at
eu-1, apps and the Slack sink up) and waits for it with a deadline, so one test's fault
never leaks into the next.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from regionops.drivers.postgres import SqlNode, SqlObserver
from regionops.drivers.traffic import traffic_for
from regionops.lab import pglab
from regionops.lab.config import LAB_CLUSTER, LAB_NODES, LAB_PRIMARY
from regionops.lab.slack_sink import read_messages
from regionops.waiting import poll_until

# The lab's parts that a lab started without Prefect (``lab.up(with_prefect=False)``) does not run.
PREFECT_PARTS = ("prefect database", "prefect server", "runbook deployments", "alert receiver")


def sql(lab, node: str, dbname: str = "app") -> SqlNode:
    """SQL access to a lab node."""
    return SqlNode(pglab.conninfo(lab.cfg, node, dbname))


def streaming(lab, node: str) -> bool:
    """True when ``node`` is a replica whose WAL receiver is streaming."""
    state = SqlObserver(connect_timeout=1).observe(node, pglab.conninfo(lab.cfg, node))
    return bool(state.reachable and state.wal_receiver and state.wal_receiver.status == "streaming")


def wait_steady(lab, timeout: float = 30) -> None:
    """Wait until every replica streams from eu-1 again."""
    for node in LAB_NODES:
        if node != LAB_PRIMARY:
            poll_until(lambda n=node: streaming(lab, n), timeout=timeout, what=f"{node} streaming")


def slack_messages(lab) -> list[dict]:
    """Every message the lab's Slack sink holds."""
    return read_messages(f"http://127.0.0.1:{lab.cfg.ports.slack}")


def clear_slack(lab) -> None:
    """Forget every message in the sink."""
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{lab.cfg.ports.slack}/messages", method="DELETE")
    urllib.request.urlopen(req, timeout=5).close()


@contextmanager
def node_stopped(lab, node: str, mode: str = "fast") -> Iterator[None]:
    """A node's PostgreSQL is stopped."""
    ctl = pglab.pgctl(lab.cfg, node)
    ctl.stop(mode)
    try:
        yield
    finally:
        if not ctl.is_running():
            ctl.start()
        wait_steady(lab)


@contextmanager
def replication_broken(lab, node: str) -> Iterator[None]:
    """The replica runs but its primary_conninfo points at a port nobody listens on."""
    replica = sql(lab, node, "postgres")
    original = replica.query("SHOW primary_conninfo")[0]["primary_conninfo"]
    replica.set_config("primary_conninfo", f"host=127.0.0.1 port=1 user=postgres application_name={node}")
    poll_until(lambda: not streaming(lab, node), timeout=15, what=f"{node} to stop streaming")
    try:
        yield
    finally:
        replica.set_config("primary_conninfo", original)
        wait_steady(lab)


@contextmanager
def replay_paused(lab, node: str, wal_bytes: int = 1 << 20) -> Iterator[None]:
    """Replay is paused on ``node`` while the primary writes about ``wal_bytes`` of WAL."""
    replica = sql(lab, node)
    replica.pause_replay()
    primary = sql(lab, LAB_PRIMARY)
    primary.query("CREATE TABLE IF NOT EXISTS test_filler (id int, pad text)")
    rows = max(1, wal_bytes // 1000)
    primary.query("INSERT INTO test_filler SELECT g, repeat('x', 900) FROM generate_series(1, %s) g", (rows,))
    try:
        yield
    finally:
        replica.resume_replay()
        primary.query("DROP TABLE IF EXISTS test_filler")
        wait_steady(lab)


@contextmanager
def process_stopped(lab, name: str) -> Iterator[None]:
    """A lab process (``app-apac``, ``slack-sink``, ...) is stopped."""
    lab.stop_process(name)
    try:
        yield
    finally:
        lab.ensure_processes()


@contextmanager
def writer_at(lab, node: str) -> Iterator[None]:
    """The writer DNS record points at ``node`` instead of the primary."""
    topo = lab.topology()
    traffic = traffic_for(topo)
    zone, record = topo.traffic.route53_zone, topo.writer_record(LAB_CLUSTER)
    traffic.set_record(zone, record, topo.node_dns_name(LAB_CLUSTER, node), ttl=topo.traffic.record_ttl)
    try:
        yield
    finally:
        traffic.set_record(zone, record, topo.node_dns_name(LAB_CLUSTER, LAB_PRIMARY), ttl=topo.traffic.record_ttl)
