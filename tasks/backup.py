"""Backup tasks: each runs one pgBackRest command through the node seam, or one proof-record step.

Never cached (state changes under them).  Taking a backup is not retried automatically:
pgBackRest resumes or cleans up an interrupted backup itself on the next run, and a
second full read of the database is a decision for the schedule or a human.  Reading
(``info``) and checks that wait on the archive are retried on transient errors.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from regionops.backup.proof import BackupProof, ProofStore, take_fingerprint_point
from regionops.drivers.pgbackrest import BackupInfo, BackupResult, BackupType, CommandResult, PgBackRest, VerifyResult
from regionops.node import node_operator_for
from regionops.node.pgbackrest_step import seam_driver
from regionops.topology import Topology
from tasks.common import TRANSIENT_RETRIES


def _driver(topology: Topology, cluster: str, node: str) -> PgBackRest:
    """The node's pgBackRest, its commands run by the cluster's node operator (inline or its regional worker)."""
    return seam_driver(topology, cluster, node, node_operator_for(topology, cluster))


@task(name="pgbackrest backup", cache_policy=NO_CACHE)
def take(topology: Topology, cluster: str, node: str, backup_type: BackupType, repo: int) -> BackupResult:
    """``pgbackrest backup --type=... --repo=N`` on ``node``; its label from its own log.

    Not described here: the ``info`` that retention reads right after (:func:`apply_retention`)
    carries the new set's sizes, so the runbook asks pgBackRest once, not twice.
    """
    return _driver(topology, cluster, node).backup(backup_type, repo)


@task(name="pgbackrest check", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def check(topology: Topology, cluster: str, primary: str) -> CommandResult:
    """``pgbackrest check`` on the primary: switches WAL and waits until it is in every repository."""
    return _driver(topology, cluster, primary).check()


@task(name="retention", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def apply_retention(
    topology: Topology, cluster: str, node: str, repo: int, store: ProofStore
) -> tuple[list[BackupInfo], list[str]]:
    """``pgbackrest expire`` of one repository, then the backups it still lists and the proof records pruned.

    Expire is pgBackRest's own retention; the proof records of the sets it expired go
    with them.  Returns (the ``info`` entries kept, oldest first: the new backup's sizes
    are read from there; labels whose proof records were removed).
    """
    driver = _driver(topology, cluster, node)
    driver.expire(repo=repo)
    kept = driver.info(repo=repo).backups
    return kept, store.prune({b.label for b in kept})


@task(name="pgbackrest verify", cache_policy=NO_CACHE)
def verify(topology: Topology, cluster: str, node: str, repo: int, processes: int | None = None) -> VerifyResult:
    """``pgbackrest verify`` of one repository; a bad object is a VerificationFailed naming it."""
    return _driver(topology, cluster, node).verify(repo=repo, process_max=processes)


# No task retries: it retries its table lock itself, and a retry here could add a second restore point.
@task(name="fingerprint point", cache_policy=NO_CACHE)
def fingerprint_point(topology: Topology, cluster: str, primary: str, label: str, tables: list[str]) -> BackupProof:
    """On the primary: fingerprint the tables and create the restore point named after ``label``."""
    return take_fingerprint_point(topology, cluster, primary, label, tables)


@task(name="store proof", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def store_proof(store: ProofStore, proof: BackupProof) -> str:
    """Put the proof record beside the backup in the store's repository; returns its key."""
    return store.put_proof(proof)


def open_proof_stores(topology: Topology, cluster: str, regions: list[str]) -> dict[str, ProofStore]:
    """The proof store of each repository region, its S3 client built and its connection open.

    The backup runbook calls this beside the backup, so storing the proof does not wait
    for the clients (see :meth:`ProofStore.warm`).
    """
    return {region: ProofStore.for_cluster(topology, cluster, region).warm() for region in regions}
