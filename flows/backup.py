"""Runbook: backup, with pgBackRest as the engine.

Steps, in the order the flow below takes them:

1. **Lock**: one backup of a cluster at a time (its backup lock: a second run waits
   ``lock_wait_seconds``, then refuses).  Not the change lock: a failover never waits for a backup.
2. **Plan**: the stanza and its repositories from the topology: the home bucket is repo1,
   each ``backup.copy_to`` region adds one.  Every repository region (and every region
   named in ``repos``) is checked against the cluster's residency first: a refused one
   is a ResidencyViolation naming the rule, before any pgBackRest command runs.
3. **Observe** every node: exactly one primary, or refuse.  The source is the primary
   (a standby source is refused: pgBackRest's backup-standby needs both nodes'
   configuration in one place, not supported yet).
4. **Backup** into each repository: ``pgbackrest backup --type=full|diff|incr --repo=N``
   on the source's host, through the node seam.  A diff or incr with no full before it
   becomes a full (pgBackRest's rule; the report shows the type taken).
5. **Proof**: on the primary, the fingerprint tables are counted and checksummed and a
   restore point ``regionops-<cluster>-<label of repo1's backup>`` is created;
   ``pgbackrest check`` switches WAL and waits until the archive holds it; the proof
   record goes into every written repository's bucket, under that repository's label
   (only after the check; the buckets' S3 clients were opened while the backup ran).
6. **Retention**, beside the proof: ``pgbackrest expire`` per repository (its
   retention-full/-diff); proof records of backups pgBackRest no longer lists are
   deleted.  The ``info`` read after expire is also where the new set's sizes come from
   (no second ``info`` after the backup).
7. **Verify** (default on): ``pgbackrest verify`` of each written repository; a bad
   object fails the run, naming it.
8. **Publish** the backup gauges to the Pushgateway and **report** (UI artifact, Slack
   thread): label, type, sizes, duration, repositories, verify outcome, fingerprint.

``dry_run`` plans (stanza, repositories, type, source) and changes nothing.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from prefect import flow
from pydantic import BaseModel, Field

from regionops.backup.proof import BackupProof
from regionops.decisions.residency import check_all
from regionops.drivers.pgbackrest import BackupResult, BackupType, Repository, StanzaPlan, VerifyResult, plan_stanza
from regionops.runbook.context import CHANGE_HOOKS, RunbookRun
from regionops.runbook.monitoring import BACKUP_JOB, backup_gauges
from regionops.runbook.params import ClusterChangeParams
from regionops.topology import Topology, load_topology
from regionops.units import human_bytes
from tasks import backup as bt
from tasks.observe import observe_node
from tasks.runbook_monitoring import publish


class BackupParams(ClusterChangeParams):
    """Parameters of the backup runbook (rendered as a form in the Prefect UI)."""

    backup_type: BackupType = Field(
        "incr",
        description="full, diff (changes since the last full) or incr (since the last backup); a diff or "
        "incr with no full before it is taken as a full",
    )
    source: str | None = Field(
        None, description="Node to back up from; default (and for now the only choice) the primary"
    )
    repos: list[str] | None = Field(
        None,
        description="Regions whose repository receives the backup; default every repository of the stanza "
        "(the home bucket first, then the copy_to regions)",
    )
    verify: bool = Field(True, description="Run pgbackrest verify on each written repository after the backup")
    verify_processes: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Parallel processes for verify (it reads every file with one request each, "
        "so it waits on the object store more than on CPU); default the stanza's "
        "process_max",
    )
    fingerprint_tables: list[str] | None = Field(
        None,
        description="Tables whose rows prove a restore; default the topology's (keep them small: they are "
        "locked against writes while counted)",
    )
    lock_wait_seconds: float = ClusterChangeParams.default(
        "lock_wait_seconds",
        60,
        description="How long to wait for another backup of the cluster to finish before refusing",
    )


class RepoBackup(BaseModel):
    """One repository's part of the run: its backup, proof record, retention and verification."""

    repository: Repository
    backup: BackupResult
    proof_key: str | None = None
    listed: list[str] = Field(default_factory=list, description="labels pgBackRest lists after expire")
    pruned_proofs: list[str] = Field(default_factory=list)
    verify: VerifyResult | None = None

    @property
    def taken_type(self) -> str:
        """The type pgBackRest took (an incr with no prior full is a full)."""
        return self.backup.backup.type if self.backup.backup else self.backup.type

    def sentence(self) -> str:
        """One line for the report."""
        b = self.backup.backup
        sizes = (
            f", {human_bytes(b.size)} database, {human_bytes(b.delta)} copied, {human_bytes(b.repo_size)} stored"
            if b
            else ""
        )
        verified = f"; {self.verify.sentence()}" if self.verify else ""
        return (
            f"repo{self.repository.index} ({self.repository.region}, s3://{self.repository.bucket}): "
            f"{self.taken_type} backup {self.backup.label}{sizes} in {self.backup.seconds:.1f} s; "
            f"{len(self.listed)} backup(s) kept{verified}"
        )


class BackupRunResult(BaseModel):
    """Everything one backup run did (or, in a dry run, would do)."""

    cluster: str
    dry_run: bool
    backup_type: BackupType = Field(description="the type asked for")
    source: str | None = None
    planned: list[Repository] = []
    label: str | None = Field(
        None, description="label of the backup in the home repository (repo1 or the first written)"
    )
    repos: list[RepoBackup] = []
    proof: BackupProof | None = None
    verify_after: bool = Field(True, description="verify each written repository after the backup")
    verified: bool | None = Field(None, description="every written repository verified (None: not run)")
    seconds: float = 0.0

    def sentence(self) -> str:
        """The run in one line."""
        into = ", ".join(f"repo{r.index} ({r.region})" for r in self.planned)
        if self.dry_run:
            return (
                f"dry run: would take a{'n' if self.backup_type == 'incr' else ''} {self.backup_type} backup of "
                f"{self.cluster} from {self.source or 'the primary'} into {into}"
                f"{', then verify' if self.verify_after else ''}; nothing was changed"
            )
        taken = self.repos[0].taken_type if self.repos else self.backup_type
        verify = {None: "not verified", True: "verified", False: "verification failed"}[self.verified]
        proof = f"; {self.proof.sentence()}" if self.proof else ""
        return (
            f"{taken} backup {self.label} of {self.cluster} from {self.source} into {into} in "
            f"{self.seconds:.1f} s, {verify}{proof}"
        )


@flow(name="backup", persist_result=True, **CHANGE_HOOKS)
def backup(params: BackupParams = BackupParams()) -> BackupRunResult:
    """Back up a cluster with pgBackRest into every repository its residency allows, prove it, verify it."""
    topology = load_topology(params.topology)
    cluster_name, _ = topology.cluster(params.cluster)
    run = RunbookRun(
        topology,
        "backup",
        cluster_name,
        f"Backup of {cluster_name}",
        params,
        lock="backup",
        start_lines=[
            f"{params.backup_type} backup of cluster {cluster_name}" + (" (dry run)" if params.dry_run else "")
        ],
    )
    with run:  # 1. the backup lock (not for a dry run)
        # 2. Plan and residency: a refused repository stops the run before any command runs.
        repos = _chosen_repositories(topology, plan_stanza(topology, cluster_name), params.repos)
        run.reporter.step("stanza " + cluster_name + ": " + "; ".join(r.sentence() for r in repos))
        result = _run(params, topology, cluster_name, repos, run)
        _report(params, topology, result, run)
        return result


def _chosen_repositories(topology: Topology, plan: StanzaPlan, regions: list[str] | None) -> list[Repository]:
    """The plan's repositories, or those of ``regions`` (each checked against the residency first)."""
    if regions is None:
        return list(plan.repositories)
    check_all(topology, plan.cluster, regions, "pgBackRest backup")
    return [plan.repository(region) for region in dict.fromkeys(regions)]


def _run(
    params: BackupParams, topology: Topology, cluster_name: str, repos: list[Repository], run: RunbookRun
) -> BackupRunResult:
    reporter = run.reporter
    started = time.monotonic()
    _, cluster = topology.cluster(cluster_name)
    result = BackupRunResult(
        cluster=cluster_name,
        dry_run=params.dry_run,
        backup_type=params.backup_type,
        planned=repos,
        verify_after=params.verify,
    )

    # 3. The one primary, and the source.
    states = {
        n: f.result() for n, f in {n: observe_node.submit(topology, cluster_name, n) for n in cluster.nodes}.items()
    }
    primaries = sorted(n for n, s in states.items() if s.reachable and s.role == "primary")
    if len(primaries) != 1:
        raise run.refuse(
            f"backup of {cluster_name} refused: it needs exactly one primary, found "
            f"{len(primaries)} ({', '.join(primaries) or 'none reachable'}); nothing was changed"
        )
    primary = primaries[0]
    if params.source not in (None, primary):
        raise run.refuse(
            f"backup of {cluster_name} from {params.source} refused: backing up from a standby is not "
            f"supported yet (pgBackRest's backup-standby needs the primary's configuration on the "
            f"standby's host); back up from the primary {primary}"
        )
    result.source = primary
    reporter.step(
        f"source: the primary {primary}; stanza {cluster_name}, {params.backup_type} backup into "
        + ", ".join(f"repo{r.index} ({r.region})" for r in repos)
    )
    if params.dry_run:
        return result
    if params.require_approval:
        run.approve(
            [
                f"{params.backup_type} backup of {cluster_name} from {primary} into "
                + ", ".join(r.sentence() for r in repos),
                "then expire by each repository's retention" + (" and verify" if params.verify else ""),
            ],
            f"backup {cluster_name}",
        )
    run.changed = True

    # 4. One backup per repository, from the source's host; meanwhile the proof stores'
    #    S3 clients are built (they cost about a second, the backup far more).
    with ThreadPoolExecutor(1, thread_name_prefix="proof-stores") as opener:
        opening = opener.submit(bt.open_proof_stores, topology, cluster_name, [r.region for r in repos])
        for repo in repos:
            taken = bt.take(topology, cluster_name, primary, params.backup_type, repo.index)
            part = RepoBackup(repository=repo, backup=taken)
            result.repos.append(part)
            reporter.step(part.backup.sentence())
        stores = opening.result()
    result.label = result.repos[0].backup.label

    # 5. Retention runs beside the proof (they touch different things): each repository's
    #    expire, what it still lists, and the proof records of what it expired.  A new
    #    backup's own label is listed, so its proof record is never pruned.
    retention = {
        part.repository.index: bt.apply_retention.submit(
            topology, cluster_name, primary, part.repository.index, stores[part.repository.region]
        )
        for part in result.repos
    }

    # 6. The proof: fingerprint point after the backups, archived, recorded beside each backup.
    tables = params.fingerprint_tables if params.fingerprint_tables is not None else cluster.backup.fingerprint_tables
    if result.label and tables:
        proof = bt.fingerprint_point(topology, cluster_name, primary, result.label, tables)
        reporter.step(bt.check(topology, cluster_name, primary).sentence(), slack=False)
        # Only once the restore point is archived (check above) is a proof record written;
        # the records of the repositories go up side by side.
        stored = {
            part.repository.index: bt.store_proof.submit(
                stores[part.repository.region], proof.model_copy(update={"label": part.backup.label})
            )
            for part in result.repos
            if part.backup.label
        }
        for part in result.repos:
            if part.repository.index in stored:
                part.proof_key = stored[part.repository.index].result()
        result.proof = proof
        reporter.step(proof.sentence())
    elif not tables:
        reporter.step("no fingerprint tables: no proof record (restore verification can only check that it starts)")
    for part in result.repos:
        kept, part.pruned_proofs = retention[part.repository.index].result()
        part.listed = [b.label for b in kept]
        # The new set's sizes come from the info retention read (one info per repository, not two).
        entry = next((b for b in kept if b.label == part.backup.label), None)
        part.backup = part.backup.model_copy(update={"backup": entry})
        reporter.step(
            f"repo{part.repository.index}: retention applied, {len(part.listed)} backup(s) kept"
            + (f", proof records of {', '.join(part.pruned_proofs)} removed" if part.pruned_proofs else ""),
            slack=False,
        )

    # 7. Verify each written repository (a bad object raises VerificationFailed naming it).
    if params.verify:
        for part in result.repos:
            part.verify = bt.verify(topology, cluster_name, primary, part.repository.index, params.verify_processes)
            reporter.step(part.verify.sentence())
        result.verified = True
    result.seconds = round(time.monotonic() - started, 2)
    return result


def _report(params: BackupParams, topology: Topology, result: BackupRunResult, run: RunbookRun) -> None:
    reporter = run.reporter
    home = result.repos[0].backup.backup if result.repos else None
    if home is not None:
        publish(
            topology, BACKUP_JOB, result.cluster, backup_gauges(home.stopped, home.repo_size, result.seconds), reporter
        )
    reporter.finish(
        "dry run" if params.dry_run else "succeeded",
        [result.sentence(), *(part.sentence() for part in result.repos)],
        tables={
            "backups": [
                {
                    "repo": f"repo{p.repository.index}",
                    "region": p.repository.region,
                    "bucket": p.repository.bucket,
                    "label": p.backup.label,
                    "type": p.taken_type,
                    "size": human_bytes(p.backup.backup.size) if p.backup.backup else "",
                    "copied": human_bytes(p.backup.backup.delta) if p.backup.backup else "",
                    "stored": human_bytes(p.backup.backup.repo_size) if p.backup.backup else "",
                    "seconds": round(p.backup.seconds, 1),
                    "verify": ("passed" if p.verify.ok else "failed") if p.verify else "not run",
                }
                for p in result.repos
            ],
            "fingerprint": [
                {"table": t, "rows": f.rows, "checksum": f.checksum}
                for t, f in (result.proof.fingerprint.items() if result.proof else [])
            ],
        },
    )
