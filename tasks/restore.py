"""Restore tasks: the steps of restore verification, and the node seam's steps of a real restore.

Restore verification's steps touch a scratch directory on the host that runs the
flow (pgBackRest runs there with a configuration written for that directory).  A real
restore's disk steps touch the node's data directory, so they go through the node
seam (:mod:`regionops.node`): inline on a single machine, a child run on the node's
region pool otherwise.  None is retried: a half-restored directory is torn down and
the run reports why.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from regionops.backup import restore as real
from regionops.backup import scratch
from regionops.backup.proof import BackupProof, ProofStore, Verification
from regionops.drivers.pgbackrest import restore_driver
from regionops.drivers.postgres import ConnInfo, sql_node_at
from regionops.model.restore import (
    ActivatedRestore,
    ActivateRequest,
    BackupSet,
    Fingerprint,
    Phase,
    RequestedTarget,
    RestoreDiskFacts,
    RestoreTarget,
    StagedRestore,
    StageRequest,
    TableCheck,
)
from regionops.node import node_operator_for
from regionops.topology import Topology


@task(name="prepare directories", cache_policy=NO_CACHE)
def prepare_dirs(paths: list[str], os_user: str | None) -> list[Phase]:
    """An empty directory the PostgreSQL OS user owns at each path, parent first (a used one is refused)."""
    return [scratch.prepare_empty_dir(Path(path), os_user) for path in paths]


@task(name="pgbackrest info", cache_policy=NO_CACHE)
def backup_sets(topology: Topology, cluster: str, data_dir: str, work_dir: str, repo: int) -> list[BackupSet]:
    """The good backup sets of ``repo``, oldest first (with the scratch directory's configuration)."""
    return scratch.backup_sets(restore_driver(topology, cluster, Path(data_dir), Path(work_dir)), repo)


@task(name="choose set and target", cache_policy=NO_CACHE)
def choose_target(
    topology: Topology,
    cluster: str,
    region: str | None,
    sets: list[BackupSet],
    repo: int,
    label: str | None,
    target_type: RequestedTarget,
    target: str | None,
    proofs: dict[str, BackupProof | None] | None = None,
) -> RestoreTarget:
    """The set (refused when missing or ending after the target) and where recovery stops, from its proof.

    ``proofs``: proof records already read, by label (the runbook reads the named set's
    while ``pgbackrest info`` runs); the chosen set's is read here when it is not among them.
    """
    chosen = real.choose_set(cluster, sets, repo, label, target_type, target)
    if proofs is not None and chosen.label in proofs:
        proof = proofs[chosen.label]
    else:
        proof = ProofStore.for_cluster(topology, cluster, region).proof(chosen.label)
    expected = {
        t: Fingerprint(rows=f.rows, checksum=f.checksum) for t, f in (proof.fingerprint if proof else {}).items()
    }
    return real.target_for(
        cluster,
        chosen,
        target_type,
        target,
        proof.restore_point if proof else None,
        expected,
        topology.clusters[cluster].backup.fingerprint_tables,
    )


def open_proof_store(
    topology: Topology, cluster: str, region: str | None, label: str | None
) -> tuple[ProofStore, dict[str, BackupProof | None] | None]:
    """The region's proof store, warmed, and the proof record of ``label`` when one is named.

    Not a task: restore verification runs it in a thread beside ``pgbackrest info``, and
    keeps the store (a live S3 client) for the verdict.
    """
    store = ProofStore.for_cluster(topology, cluster, region).warm()
    return store, ({label: store.proof(label)} if label else None)


@task(name="pgbackrest restore", cache_policy=NO_CACHE)
def restore_into(
    topology: Topology, cluster: str, data_dir: str, work_dir: str, target: RestoreTarget, ending: scratch.Ending
) -> Phase:
    """``pgbackrest restore`` of the target's set into the empty scratch directory."""
    driver = restore_driver(topology, cluster, Path(data_dir), Path(work_dir))
    return scratch.restore_into(driver, Path(data_dir), target, ending)


@task(name="configure and start restored instance", cache_policy=NO_CACHE)
def configure_and_start(
    topology: Topology, cluster: str, data_dir: str, name: str, port: int, log_file: str, timeout: int
) -> list[Phase]:
    """Loopback port, private pg_hba, no archiving, small buffers; then pg_ctl start -w (two phases, one step)."""
    c = topology.clusters[cluster]
    data = Path(data_dir)
    return [
        scratch.configure_instance(data, name=name, port=port, cluster=c, os_user=c.os_user),
        scratch.start_instance(data, Path(log_file), c.os_user, timeout),
    ]


@task(name="wait for recovery target", cache_policy=NO_CACHE)
def wait_recovered(
    info: ConnInfo,
    data_dir: str,
    log_file: str,
    os_user: str | None,
    ending: scratch.Ending,
    target: RestoreTarget,
    timeout: float,
) -> Phase:
    """Recovery reached the target (promoted or paused there): the instance is consistent."""
    return scratch.wait_recovered(info, Path(data_dir), Path(log_file), os_user, ending, target, timeout)


@task(name="check data", cache_policy=NO_CACHE)
def check_data(info: ConnInfo, target: RestoreTarget) -> tuple[Phase, list[TableCheck]]:
    """Rows and checksums of the fingerprint tables (equal to the proof at its restore point)."""
    return scratch.check_data(info, target)


@task(name="tear down", cache_policy=NO_CACHE)
def remove_dir(path: str, os_user: str | None) -> Phase:
    """Stop the instance on ``path`` and delete it."""
    return scratch.remove_dir(Path(path), os_user)


@task(name="record verification", cache_policy=NO_CACHE)
def record_verification(store: ProofStore, verdict: Verification) -> str:
    """Store the verdict beside the set's proof record (the monitoring reads the newest)."""
    return store.record_verification(verdict)


# -- restore onto a node: its disk steps go through the node seam -------------------------
# (LocalNodeOperator inline on a single machine; RegionalNodeOperator as a child run on the
# node's region pool, where the node's disk is.)  Not retried: a half-done step is undone
# by the step itself, and the run reports why.


@task(name="read restore facts", cache_policy=NO_CACHE)
def restore_facts(topology: Topology, cluster: str, node: str, repo: int) -> RestoreDiskFacts:
    """Free space beside the node's data directory, running, holds data, and the repository's sets."""
    return node_operator_for(topology, cluster).restore_facts(node, repo)


@task(name="restore beside the node and verify", cache_policy=NO_CACHE)
def stage(topology: Topology, cluster: str, request: StageRequest) -> StagedRestore:
    """pgbackrest restore into an empty directory beside the node, start on a loopback port, recover, prove."""
    return node_operator_for(topology, cluster).restore_stage(request.plan.node, request)


@task(name="swap in and start", cache_policy=NO_CACHE)
def activate(topology: Topology, cluster: str, request: ActivateRequest) -> ActivatedRestore:
    """Swap the verified copy in, give the node its role, start it (swapped back on failure)."""
    return node_operator_for(topology, cluster).restore_activate(request.plan.node, request)


@task(name="ensure replication slot", cache_policy=NO_CACHE)
def ensure_slot(primary_info: ConnInfo, slot: str) -> bool:
    """The restored replica's slot on the primary (created when missing): SQL, no host access needed."""
    return sql_node_at(primary_info).ensure_slot(slot)
