"""Taking a backup for the restore tests without the backup runbook: the driver and the proof helpers.

``take_backup`` does what the backup runbook does for the restore side to find: a
pgBackRest backup from the primary, the fingerprint of the fingerprint tables at a
named restore point taken after it, ``pgbackrest check`` (so the WAL holding that
restore point is archived), and the proof record beside the backup.
"""

from __future__ import annotations

from regionops.backup.proof import BackupProof, ProofStore, take_fingerprint_point
from regionops.drivers.pgbackrest import BackupType, PgBackRest
from regionops.drivers.postgres import SqlObserver, conninfo_for
from regionops.topology import Topology


def primary_of(topology: Topology, cluster: str) -> str:
    """The node that is primary now (asked over SQL)."""
    _, spec = topology.cluster(cluster)
    for name, node in spec.nodes.items():
        state = SqlObserver(connect_timeout=2).observe(name, conninfo_for(spec, node))
        if state.reachable and state.role == "primary":
            return name
    raise AssertionError(f"cluster {cluster} has no reachable primary")


def take_backup(lab_or_topology, cluster: str = "core", backup_type: BackupType = "full") -> BackupProof:
    """A pgBackRest backup of ``cluster`` into repo1 with its proof record stored; returns the proof."""
    topology = lab_or_topology if isinstance(lab_or_topology, Topology) else lab_or_topology.topology()
    primary = primary_of(topology, cluster)
    driver = PgBackRest.for_node(topology, cluster, primary)
    taken = driver.backup(backup_type)
    assert taken.label, taken.sentence()
    tables = topology.clusters[cluster].backup.fingerprint_tables
    proof = take_fingerprint_point(topology, cluster, primary, taken.label, tables)
    driver.check()  # switches WAL and waits until the restore point's segment is archived
    ProofStore.for_cluster(topology, cluster).put_proof(proof)
    return proof
