"""Helpers for the switchover / failover / resync tests: roles, streaming, DNS, writers, reports.

These tests move the primary, so they run on a private cluster (:func:`private_cluster`)
that the module shares, and put it back to eu-1 primary between tests where they can.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun

from regionops.drivers.appwrite import HttpAppWriter
from regionops.drivers.postgres import NodeState, SqlNode, SqlObserver
from regionops.ha.fencing import FenceStore
from regionops.ha.writer import writer_node
from regionops.lab import pglab
from regionops.lab.config import LAB_CLUSTER, LAB_NODES
from regionops.lab.lab import Lab
from regionops.lab.processes import command_lines
from regionops.waiting import poll_until
from tests import labtools


@contextmanager
def private_cluster() -> Iterator[Lab]:
    """A lab of its own (PostgreSQL, moto, Slack sink, apps on free ports) without a Prefect server.

    Flows still run on the session lab's Prefect server (the ``lab`` fixture must be
    active): Prefect's in-process services, the concurrency-lease client among them,
    bind to the first API URL they use, so a second Prefect server in one test process
    would send this module's cluster locks to the wrong server (and later tests' locks
    to a stopped one).
    """
    lab_dir = Path(tempfile.mkdtemp(prefix="regionops-test-ha-"))
    os.chmod(lab_dir, 0o755)  # PostgreSQL runs as another user when tests run as root
    lab = Lab.open(lab_dir, free_ports=True)
    try:
        status = lab.up(progress=lambda m: None, with_prefect=False)
        unhealthy = [c for c in status.components if not c.healthy and c.name not in labtools.PREFECT_PARTS]
        assert not unhealthy, unhealthy
        yield lab
    finally:
        lab.down(progress=lambda m: None, purge=True)


def run_id(state) -> UUID:
    """The flow run id of a returned state."""
    return state.state_details.flow_run_id


def state(lab, node: str) -> NodeState:
    """A lab node's state now."""
    return SqlObserver(connect_timeout=1).observe(node, pglab.conninfo(lab.cfg, node))


def streams_from(lab, node: str, primary: str) -> bool:
    """``node`` is a replica streaming from ``primary``'s port."""
    s = state(lab, node)
    r = s.wal_receiver
    return bool(
        s.reachable
        and s.role == "replica"
        and r
        and r.status == "streaming"
        and r.sender_port == lab.cfg.ports.postgres[primary]
    )


def layout(lab) -> dict[str, str]:
    """node -> 'primary' / 'replica of X' / 'down': the cluster's shape at a glance."""
    out = {}
    for node in LAB_NODES:
        s = state(lab, node)
        if not s.reachable:
            out[node] = "down"
        elif s.role == "primary":
            out[node] = "primary"
        else:
            port = s.wal_receiver.sender_port if s.wal_receiver and s.wal_receiver.status == "streaming" else None
            source = next((n for n, p in lab.cfg.ports.postgres.items() if p == port), None)
            out[node] = f"replica of {source}" if source else "replica (not streaming)"
    return out


def expect_layout(lab, primary: str, timeout: float = 10) -> dict[str, str]:
    """Wait (deadline) until ``primary`` is primary and every other node streams from it."""
    want = {n: "primary" if n == primary else f"replica of {primary}" for n in LAB_NODES}
    return poll_until(
        lambda: layout(lab) == want and layout(lab),
        timeout=timeout,
        what=f"{primary} primary with every other node streaming from it",
    )


def writer(lab) -> str | None:
    """The node the writer record points at."""
    return writer_node(lab.topology(), LAB_CLUSTER)


def sql(lab, node: str) -> SqlNode:
    return labtools.sql(lab, node)


def row_ids(lab, node: str) -> set[int]:
    """Every app_events id on ``node``."""
    return {r["id"] for r in sql(lab, node).query("SELECT id FROM app_events")}


def write_rows(lab, n: int, region: str = "eu") -> list[int]:
    """Write ``n`` rows through the region's app; returns their ids (all must be accepted)."""
    app = HttpAppWriter()
    url = lab.topology().regions[region].app_url
    ids = []
    for i in range(n):
        w = app.write(region, url, f"test row {i}")
        assert w.accepted, w.sentence()
        ids.append(w.row_id)
    return ids


def crash(lab, node: str) -> None:
    """``pg_ctl stop -m immediate``: the server dies without a shutdown checkpoint."""
    pglab.pgctl(lab.cfg, node).stop("immediate")


def start(lab, node: str) -> None:
    ctl = pglab.pgctl(lab.cfg, node)
    if not ctl.is_running():
        ctl.start()


def fences(lab) -> dict:
    """The fences of the lab's cluster core (the shared store in its home bucket)."""
    return FenceStore.for_topology(lab.topology()).fenced(LAB_CLUSTER)


def cancel_run(run_id: UUID, what: str) -> None:
    """Cancel a flow run as the UI's *Cancel* does, and wait until the runner has cancelled it."""
    from prefect.states import Cancelling

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Cancelling(), force=True)
        poll_until(
            lambda: client.read_flow_run(run_id).state.is_cancelled(),
            timeout=60,
            interval=0.5,
            what=f"{what} to be cancelled",
        )


def slack_texts(lab) -> str:
    return " ".join(m.get("text", "") for m in labtools.slack_messages(lab))


def report_markdown(flow_run: UUID) -> str:
    """The markdown report artifact of one flow run."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run]), type=ArtifactFilterType(any_=["markdown"])
            )
        )
    assert artifacts, f"flow run {flow_run} has no markdown artifact"
    return "\n".join(str(a.data) for a in artifacts)


def paused_run(lab, flow_name: str, timeout: float = 30) -> FlowRun:
    """Wait (deadline) for a paused run of ``flow_name`` on this lab's topology and return it."""
    topology = str(lab.cfg.topology_path)

    def find() -> FlowRun | None:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=["PAUSED"])))
            )
            names = {f: client.read_flow(f).name for f in {r.flow_id for r in runs}}
        return next(
            (
                r
                for r in runs
                if names[r.flow_id] == flow_name and (r.parameters.get("params") or {}).get("topology") == topology
            ),
            None,
        )

    return poll_until(find, timeout=timeout, interval=0.3, what=f"a paused {flow_name} run")


class BackgroundWriter:
    """Writes through one region's app every ``interval`` s; remembers every acknowledged row."""

    def __init__(self, lab, region: str = "us", interval: float = 0.05):
        self.url = lab.topology().regions[region].app_url
        self.region = region
        self.interval = interval
        self.acked: list[tuple[float, int, str]] = []  # (monotonic time, row id, node)
        self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        app = HttpAppWriter(timeout=2)
        i = 0
        while not self._stop.wait(self.interval):
            i += 1
            w = app.write(self.region, self.url, f"background {i}")
            if w.accepted:
                self.acked.append((time.monotonic(), w.row_id, w.node))
            else:
                self.refused += 1

    def first_ack_on(self, node: str, after: float) -> float | None:
        """Monotonic time of the first acknowledged write on ``node`` after ``after``."""
        return next((t for t, _, n in self.acked if n == node and t >= after), None)

    @property
    def ids(self) -> set[int]:
        return {i for _, i, _ in self.acked}


@contextmanager
def writing(lab, region: str = "us", interval: float = 0.05) -> Iterator[BackgroundWriter]:
    """A background writer for the block's duration (a write every ``interval`` s)."""
    w = BackgroundWriter(lab, region, interval)
    w._thread.start()
    try:
        yield w
    finally:
        w._stop.set()
        w._thread.join(5)


class WritablePrimaryWatch:
    """Watches, in the background, how many nodes take writes at once (reachable, primary, not read-only).

    ``most`` is the largest number seen in any one look; ``looks`` how many looks were made.
    A frozen or dead node answers nobody and does not count: it cannot take a write.
    """

    def __init__(self, lab, interval: float = 0.1):
        self.lab = lab
        self.interval = interval
        self.most = 0
        self.looks = 0
        self.seen_two: list[list[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def wait_for_looks(self, count: int, timeout: float = 15.0) -> None:
        """Wait until ``count`` looks have been completed (or ``timeout`` seconds have passed)."""
        deadline = time.monotonic() + timeout
        while self.looks < count and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.05)

    def _run(self) -> None:
        observer = SqlObserver(connect_timeout=1)
        while not self._stop.wait(self.interval):
            writable = []
            for node in LAB_NODES:
                s = observer.observe(node, pglab.conninfo(self.lab.cfg, node))
                if s.reachable and s.role == "primary" and not s.read_only:
                    writable.append(node)
            self.looks += 1
            self.most = max(self.most, len(writable))
            if len(writable) > 1:
                self.seen_two.append(writable)


@contextmanager
def watching_primaries(lab) -> Iterator[WritablePrimaryWatch]:
    """A :class:`WritablePrimaryWatch` for the block's duration."""
    watch = WritablePrimaryWatch(lab)
    watch._thread.start()
    # One whole look before the block and one after it, so the watch always covers both
    # ends of the block, however long a look at a frozen node takes on a slow machine.
    watch.wait_for_looks(1)
    try:
        yield watch
    finally:
        watch.wait_for_looks(watch.looks + 1)
        watch._stop.set()
        watch._thread.join(10)


class CommandLineWatch:
    """Watches, in the background, every process's command line for a secret (``/proc/<pid>/cmdline``).

    ``seen`` lists the command lines that carried it; ``looks`` counts full scans.
    """

    def __init__(self, secret: str, interval: float = 0.005):
        self.secret = secret.encode()
        self.interval = interval
        self.seen: list[str] = []
        self.looks = 0
        self.processes: set[str] = set()  # program names seen, to show the watch saw the tools run
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for _, cmdline in command_lines():
                if cmdline:
                    self.processes.add(Path(cmdline.split(b"\0", 1)[0].decode(errors="replace")).name)
                if self.secret in cmdline:
                    self.seen.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
            self.looks += 1
