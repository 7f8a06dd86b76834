"""Is the primary down?  Probe it and watch the replicas' WAL receivers until the decision is sure.

The decision is pure (:func:`regionops.decisions.decide_primary_down`, where the safety
argument is written down); this module gathers its evidence as fast as it comes: the
primary is probed every :data:`PROBE_INTERVAL`, and every replica is observed
continuously in its own thread, so a hanging connection delays nobody.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

from pydantic import BaseModel

from regionops.decisions import PrimaryDownDecision, ProbeOutcome, decide_primary_down
from regionops.drivers.postgres import NodeState
from regionops.errors import RunbookError
from regionops.ha.sqlsteps import observe, sql_node
from regionops.topology import Cluster

log = logging.getLogger(__name__)

PROBE_INTERVAL = 0.3  # between the starts of two probes of the primary
LOOK_INTERVAL = 0.1  # between two looks at the evidence (each replica is watched by its own thread)


class PrimaryDownCheck(BaseModel):
    """The confirmation: the decision, the probes and the replicas' last observations behind it."""

    decision: PrimaryDownDecision
    probes: list[ProbeOutcome]
    replica_states: dict[str, NodeState]
    receiver_timeouts: dict[str, float | None]  # each replica's wal_receiver_timeout in seconds
    seconds: float  # how long confirmation took


def receiver_timeout(cluster: Cluster, node: str, connect_timeout: float = 2) -> float | None:
    """The replica's own ``wal_receiver_timeout`` in seconds (pg_settings keeps it in ms); None when unreadable."""
    try:
        rows = sql_node(cluster, node, connect_timeout).query(
            "SELECT setting::float8 / 1000 AS seconds FROM pg_settings WHERE name = 'wal_receiver_timeout'"
        )
    except RunbookError as exc:
        log.info("cannot read wal_receiver_timeout of %s: %s", node, exc)
        return None
    return float(rows[0]["seconds"]) if rows else None


class _Watch:
    """Threads that keep probing the primary and observing each replica until stopped."""

    def __init__(self, cluster: Cluster, primary: str, replicas: list[str], connect_timeout: float):
        self.cluster, self.primary, self.connect_timeout = cluster, primary, connect_timeout
        self.stop = threading.Event()
        self.reached = threading.Event()  # a probe reached the primary: no more probes
        self.lock = threading.Lock()
        self.probes: list[ProbeOutcome] = []
        self.states: dict[str, NodeState] = {}
        self.timeouts: dict[str, float | None] = {}
        self.threads = [threading.Thread(target=self._probe, daemon=True, name=f"probe {primary}")]
        self.threads += [
            threading.Thread(target=self._observe, args=(n,), daemon=True, name=f"observe {n}") for n in replicas
        ]

    def _probe(self) -> None:
        # A probe starts every PROBE_INTERVAL without waiting for the one before: on a frozen
        # server each hangs for the whole connect timeout, and probes in a row would make the
        # minimum number of failures cost that timeout each.
        while not (self.stop.is_set() or self.reached.is_set()):
            threading.Thread(target=self._one_probe, daemon=True, name=f"probe {self.primary}").start()
            self.stop.wait(PROBE_INTERVAL)

    def _one_probe(self) -> None:
        at = datetime.now(UTC)
        state = observe(self.cluster, self.primary, connect_timeout=self.connect_timeout)
        with self.lock:
            self.probes.append(ProbeOutcome(at=at, reachable=state.reachable, error=state.error))
        if state.reachable:
            self.reached.set()

    def _observe(self, node: str) -> None:
        while not self.stop.is_set():
            state = observe(self.cluster, node, connect_timeout=self.connect_timeout)
            # Read once, before the first state is published: a state never goes without its window.
            timeout = self.timeouts.get(node)
            if state.reachable and timeout is None:
                timeout = receiver_timeout(self.cluster, node, self.connect_timeout)
            with self.lock:
                self.timeouts[node] = timeout
                self.states[node] = state
            self.stop.wait(LOOK_INTERVAL)

    def snapshot(self) -> tuple[list[ProbeOutcome], dict[str, NodeState], dict[str, float | None]]:
        with self.lock:
            return list(self.probes), dict(self.states), dict(self.timeouts)


def confirm_primary_down(
    cluster: Cluster,
    node: str,
    replicas: list[str],
    *,
    probes: int,
    grace_seconds: float,
    connect_timeout: float = 2,
) -> PrimaryDownCheck:
    """Probe ``node`` and watch the replicas' WAL receivers until :func:`decide_primary_down` is sure.

    It returns as soon as the decision is "down" (the evidence is complete), a probe
    reaches the primary ("not down"), or the probes have failed for ``grace_seconds`` (the
    ceiling: the decision at that moment).  A probe of the primary starts every
    :data:`PROBE_INTERVAL`, each in its own thread (one that hangs, on a frozen server,
    takes up to ``connect_timeout``); every replica is observed continuously in its own
    thread, so one that hangs delays nobody, and its ``wal_receiver_timeout`` is read once.
    """
    started = time.monotonic()
    watch = _Watch(cluster, node, replicas, connect_timeout)
    for thread in watch.threads:
        thread.start()
    deadline = started + grace_seconds + probes * (connect_timeout + PROBE_INTERVAL) + 5
    try:
        while True:
            seen, states, timeouts = watch.snapshot()
            waiting_for_replicas = any(n not in states for n in replicas)
            decision = decide_primary_down(
                node,
                seen,
                {n: states[n] for n in replicas if n in states},
                grace_seconds=grace_seconds,
                min_failed_probes=probes,
                receiver_timeouts=timeouts,
            )
            failures = [p for p in seen if not p.reachable]
            span = decision.failed_span_seconds or 0.0
            # Every replica must have been looked at once: one not yet seen may still hear the primary.
            final = any(p.reachable for p in seen) or (
                not waiting_for_replicas and (decision.down or (len(failures) >= probes and span >= grace_seconds))
            )
            if final or time.monotonic() >= deadline:
                break
            watch.stop.wait(LOOK_INTERVAL)
    finally:
        watch.stop.set()
    return PrimaryDownCheck(
        decision=decision,
        probes=seen,
        replica_states=states,
        receiver_timeouts=timeouts,
        seconds=round(time.monotonic() - started, 2),
    )
