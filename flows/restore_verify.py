"""Runbook: restore verification.

Proves a backup set the way an outage would need it: with pgBackRest, into a scratch
instance on the machine running this flow, then looks at the data.

1. Pick the set (``pgbackrest info`` of the chosen repository: ``label``, default the
   newest) and its proof record; the target defaults to the set's proof restore point
   (else the end of the WAL archive), or is a time, LSN, restore point name, the
   backup's end (``immediate``) or the archive's end (``default``).
2. ``pgbackrest restore --set --type --target --target-action=promote`` into an empty
   scratch directory (a configuration written for it: pg1-path is the scratch directory).
3. Start PostgreSQL on a free loopback port (no archiving, small shared_buffers,
   loopback-only pg_hba) and wait until recovery reached the target and promoted.
4. Prove the data: at the proof's restore point every fingerprint table's rows and
   checksum equal the proof; at any other target, report their row counts.
5. Time it (restore time = restore + start + recovery; total = up to the data check),
   tear the scratch instance down whatever happens, store the verdict beside the proof
   and publish the Pushgateway gauges (the three side by side: the verdict is known
   before the teardown), report (UI artifacts, Slack thread).  Runs daily.

The named set's proof record is read while ``pgbackrest info`` lists the sets.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run as current_run
from pydantic import Field

from regionops.backup.proof import Verification
from regionops.backup.restore import RestoreVerification
from regionops.backup.scratch import free_port
from regionops.drivers.pgbackrest import plan_stanza
from regionops.drivers.postgres import ConnInfo
from regionops.errors import RunbookError
from regionops.model.restore import Phase, RestoreTarget, TableCheck
from regionops.runbook.context import REPORT_HOOKS, RunbookRun
from regionops.runbook.monitoring import RESTORE_VERIFY_JOB, restore_verification_gauges
from regionops.runbook.params import RestoreTargetParams, RunbookParams
from regionops.runbook.reporting import RunReporter
from regionops.topology import load_topology
from tasks import restore as rt
from tasks.runbook_monitoring import publish


class RestoreVerifyParams(RunbookParams, RestoreTargetParams):
    """Parameters of the restore-verify runbook (rendered as a form in the Prefect UI)."""

    cluster: str | None = Field(None, description="Cluster whose backup to verify; default the topology's only one")
    scratch_dir: str | None = Field(
        None, description="Where the scratch data directory goes; default $REGIONOPS_SCRATCH_DIR or the system temp dir"
    )
    restore_timeout_seconds: float = Field(6 * 3600, gt=0, description="How long pgbackrest restore may take")
    start_timeout_seconds: int = Field(600, gt=0, description="How long PostgreSQL may take to start")
    recovery_timeout_seconds: float = Field(1800, gt=0, description="How long recovery may take to reach the target")
    notify: bool = Field(True, description="Post the run to Slack")


def scratch_root(param: str | None) -> Path:
    """The scratch parent directory: parameter, $REGIONOPS_SCRATCH_DIR, or <tmp>/regionops-scratch."""
    root = Path(param or os.environ.get("REGIONOPS_SCRATCH_DIR") or Path(tempfile.gettempdir()) / "regionops-scratch")
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)  # PostgreSQL's OS user must traverse it
    return root


@flow(name="restore-verify", persist_result=True, **REPORT_HOOKS)
def restore_verify(params: RestoreVerifyParams = RestoreVerifyParams()) -> RestoreVerification:
    """Restore a backup set into a scratch instance, prove it, measure the restore time, tear it down."""
    topology = load_topology(params.topology)
    cluster_name, cluster = topology.cluster(params.cluster)
    stanza = plan_stanza(topology, cluster_name)
    repo = stanza.repository(params.region) if params.region else stanza.repositories[0]
    wanted = f"{params.target_type} {params.target}" if params.target else params.target_type
    run = RunbookRun(
        topology,
        "restore-verify",
        cluster_name,
        f"Restore verification of {cluster_name}",
        params,
        start_lines=[
            f"cluster {cluster_name}, backup {params.label or 'newest'} from {repo.sentence()}, target {wanted}"
        ],
        lock="none",  # it restores into a scratch instance of its own: the cluster is only read
    )
    with run:
        reporter = run.reporter

        run_id = str(current_run.get_id() or os.getpid())[:8]
        work = scratch_root(params.scratch_dir) / f"restore-verify-{cluster_name}-{run_id}"
        data_dir, pgbackrest_dir, log_file = work / "data", work / "pgbackrest", work / "postgres.log"
        info = ConnInfo(
            "127.0.0.1",
            free_port(),
            cluster.database,
            cluster.user,
            cluster.password.resolve() if cluster.password else None,
        )
        phases: list[Phase] = []
        tables: list[TableCheck] = []
        target: RestoreTarget | None = None
        error: RunbookError | None = None
        started = time.monotonic()

        def done(phase: Phase) -> Phase:
            phases.append(phase)
            reporter.step(phase.sentence(), slack=False)
            return phase

        timed: list[Phase] = []
        # The proof store's S3 client is built (and the named set's proof record read) while the
        # directories are made and pgBackRest lists the sets; the verdict goes through it too.
        opener = ThreadPoolExecutor(1, thread_name_prefix="proof-store")
        opening = opener.submit(rt.open_proof_store, topology, cluster_name, repo.region, params.label)
        opener.shutdown(wait=False)
        try:
            for phase in rt.prepare_dirs([str(work), str(data_dir)], cluster.os_user):
                done(phase)
            sets = rt.backup_sets(topology, cluster_name, str(data_dir), str(pgbackrest_dir), repo.index)
            _, proofs = opening.result()
            target = rt.choose_target(
                topology,
                cluster_name,
                repo.region,
                sets,
                repo.index,
                params.label,
                params.target_type,
                params.target,
                proofs,
            )
            reporter.step(f"verifying {target.sentence()}")
            timed.append(
                done(rt.restore_into(topology, cluster_name, str(data_dir), str(pgbackrest_dir), target, "promoted"))
            )
            configured, start = rt.configure_and_start(
                topology,
                cluster_name,
                str(data_dir),
                f"verify-{target.label}",
                info.port,
                str(log_file),
                params.start_timeout_seconds,
            )
            done(configured)
            timed.append(done(start))
            timed.append(
                done(
                    rt.wait_recovered(
                        info,
                        str(data_dir),
                        str(log_file),
                        cluster.os_user,
                        "promoted",
                        target,
                        params.recovery_timeout_seconds,
                    )
                )
            )
            phase, tables = rt.check_data(info, target)
            done(phase)
        except RunbookError as exc:
            error = exc
        except BaseException:
            _torn_down(rt.remove_dir.submit(str(work), cluster.os_user), done, reporter)
            raise
        # The verdict is known: the scratch instance goes while the verdict is recorded and published.
        teardown = rt.remove_dir.submit(str(work), cluster.os_user)

        if target is None:  # no set to verify (none, or not the one asked for): nothing to record
            assert error is not None
            _torn_down(teardown, done, reporter)
            reporter.finish("failed", [f"{type(error).__name__}: {error}"])
            raise error
        checked = RestoreVerification(
            label=target.label,
            cluster=cluster_name,
            repo=repo.index,
            target=target.describe(),
            passed=error is None,
            phases=phases,
            restore_seconds=round(sum(p.seconds for p in timed), 3),
            total_seconds=round(time.monotonic() - started, 3),
            tables=tables,
            error=str(error) if error else None,
        )
        store, _ = opening.result()
        recorded = rt.record_verification.submit(
            store,
            Verification(
                cluster=cluster_name,
                label=target.label,
                status="passed" if checked.passed else "failed",
                at=datetime.now(UTC),
                target=target.describe(),
                restore_seconds=checked.restore_seconds if checked.passed else None,
                detail=checked.sentence(),
                flow_run=str(current_run.get_id() or ""),
            ),
        )
        publish(
            topology,
            RESTORE_VERIFY_JOB,
            cluster_name,
            restore_verification_gauges(datetime.now(UTC), checked.passed, checked.restore_seconds),
            reporter,
        )
        _torn_down(teardown, done, reporter)
        recorded.result()
        result = checked.model_copy(update={"phases": list(phases)})
        reporter.finish(
            "passed" if result.passed else "failed",
            [result.sentence()],
            tables={
                "phases": [{"phase": p.phase, "seconds": round(p.seconds, 2), "detail": p.detail} for p in phases],
                "tables": [t.model_dump() | {"matches": t.matches} for t in tables],
            },
        )
        if error is not None:
            raise error
        return result


def _torn_down(teardown: PrefectFuture[Phase], done: Callable[[Phase], Phase], reporter: RunReporter) -> None:
    """Wait for the scratch instance's teardown; a failure is reported, the verdict stands."""
    try:
        done(teardown.result())
    except Exception as exc:  # noqa: BLE001 - reported; the verdict stands
        reporter.step(f"teardown failed: {exc}")
