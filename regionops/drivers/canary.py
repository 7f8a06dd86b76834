"""The canary writer: numbered, timestamped heartbeat rows through the writer endpoint.

A DR drill measures recovery from the application's side: every ``interval`` the
canary resolves the cluster's writer record through Route53 (as the application does,
never a cached address), connects to the node it names with a short connect timeout,
and inserts row ``seq``.  It records every write it sent, whether and when it was
acknowledged, and on which node.  RTO and RPO are computed from this journal and from
the rows really present on the new primary (:mod:`regionops.decisions.drill`).

A write that hangs (a frozen server accepts the connection, then never answers) is
given up after ``write_timeout`` seconds and counted as not acknowledged; if it
completes later anyway, it is recorded as a *late* acknowledgement, which the drill
reports (a write the client had given up on that a server still committed).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

from regionops.drivers.postgres import connect, conninfo_for, sql_node_for
from regionops.drivers.traffic import TrafficDriver, traffic_for
from regionops.errors import RunbookError
from regionops.model import CanaryWrite
from regionops.topology import Topology

log = logging.getLogger(__name__)

CANARY_TABLE = "regionops_canary"
CANARY_SCHEMA_SQL = f"""
CREATE TABLE IF NOT EXISTS {CANARY_TABLE} (
    run_id     text        NOT NULL,
    seq        bigint      NOT NULL,
    sent_at    timestamptz NOT NULL,
    node       text        NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq)
)
"""
# The WAL position comes back with the acknowledgement: the bytes a failover lost are measured by it.
_INSERT_SQL = (
    f"INSERT INTO {CANARY_TABLE} (run_id, seq, sent_at, node) VALUES (%s, %s, %s, %s)"
    " RETURNING pg_current_wal_insert_lsn()::text AS lsn"
)


class CanaryWriter:
    """Writes a heartbeat row every ``interval`` seconds in a background thread until stopped."""

    def __init__(
        self,
        topology: Topology,
        cluster: str,
        run_id: str,
        *,
        interval: float = 0.05,
        connect_timeout: float = 1,
        statement_timeout_ms: int = 1000,
        write_timeout: float = 2.0,
        traffic: TrafficDriver | None = None,
    ):
        self.topology = topology
        self.cluster_name, self.cluster = topology.cluster(cluster)
        self.run_id = run_id
        self.interval = interval
        self.connect_timeout = connect_timeout
        self.statement_timeout_ms = statement_timeout_ms
        self.write_timeout = write_timeout
        self.traffic = traffic or traffic_for(topology)
        self._journal: list[CanaryWrite] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- set-up ---------------------------------------------------------------------------
    def writer_node(self) -> str | None:
        """The node the writer record names now (resolved through Route53 every time)."""
        record = self.traffic.get_record(
            self.topology.traffic.route53_zone, self.topology.writer_record(self.cluster_name)
        )
        return self.topology.node_for_dns_name(self.cluster_name, record.values[0]) if record else None

    def ensure_table(self) -> str:
        """Create the canary table on the writer node (it replicates everywhere).  Returns the node."""
        node = self.writer_node()
        if node is None:
            raise RunbookError("the writer record names no node of the cluster: the canary cannot write")
        sql_node_for(self.cluster, node).query(CANARY_SCHEMA_SQL)
        return node

    # -- the loop ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start writing in the background."""
        if self._thread is not None:
            raise RuntimeError("the canary is already running")
        self._thread = threading.Thread(target=self._loop, name=f"canary-{self.run_id}", daemon=True)
        self._thread.start()

    def stop(self) -> list[CanaryWrite]:
        """Stop writing; return the journal."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.write_timeout + self.interval + 5)
        return self.journal()

    def journal(self) -> list[CanaryWrite]:
        """Every write so far (a copy, in order)."""
        with self._lock:
            return [w.model_copy() for w in self._journal]

    def _loop(self) -> None:
        seq = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            seq += 1
            write = CanaryWrite(seq=seq, sent_at=datetime.now(UTC))
            with self._lock:
                self._journal.append(write)
            worker = threading.Thread(target=self._write, args=(write,), daemon=True)
            worker.start()
            worker.join(self.write_timeout)
            if worker.is_alive():
                with self._lock:
                    write.error = write.error or f"no answer within {self.write_timeout:g} s"
                    write._given_up = True
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at, time.monotonic())

    def _write(self, write: CanaryWrite) -> None:
        try:
            node = self.writer_node()
            if node is None:
                raise RunbookError("writer record names no node")
            write.node = node
            info = conninfo_for(self.cluster, self.cluster.nodes[node])
            with connect(
                info,
                connect_timeout=self.connect_timeout,
                statement_timeout_ms=self.statement_timeout_ms,
                application_name="regionops-canary",
            ) as conn:
                row = conn.execute(_INSERT_SQL, (self.run_id, write.seq, write.sent_at, node)).fetchone()
            now = datetime.now(UTC)
            write.lsn = str(row["lsn"]) if row else None
            with self._lock:
                if write._given_up:
                    write.late_ack_at = now
                else:
                    write.acked, write.acked_at = True, now
        except Exception as exc:  # noqa: BLE001 - every failure is a recorded, unacknowledged write
            with self._lock:
                write.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def canary_rows(topology: Topology, cluster: str, node: str, run_id: str) -> set[int]:
    """The sequence numbers of ``run_id``'s canary rows present on ``node``."""
    c = topology.clusters[cluster]
    rows = sql_node_for(c, node).query(f"SELECT seq FROM {CANARY_TABLE} WHERE run_id = %s", (run_id,))
    return {int(r["seq"]) for r in rows}
