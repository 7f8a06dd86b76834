"""Runbook: restore verification.

Proves a backup: downloads it (every sha256 checked on the way), unpacks it into a
fresh scratch directory, runs pg_verifybackup, starts PostgreSQL on a free loopback
port, lets recovery stop at the backup's fingerprint point, compares the data with the
manifest, and tears the scratch instance down whatever happens.  The time until the
instance is ready is the measured restore time.  The verdict is stored beside the
backup (retention never deletes the newest verified backup).  Runs daily.
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run as current_run
from pydantic import BaseModel, Field

from regionops.backup.manifest import Verification, home_region
from regionops.backup.restore import RestoreVerification
from regionops.backup.scratch import Phase, TableCheck, free_port
from regionops.drivers.postgres import ConnInfo
from regionops.errors import RunbookError
from regionops.runbook.monitoring import RESTORE_VERIFY_JOB, publish, restore_verification_gauges
from regionops.runbook.reporting import RunReporter, report_failure
from regionops.topology import load_topology
from tasks import backup as bt
from tasks import restore as rt


class RestoreVerifyParams(BaseModel):
    """Parameters of the restore-verify runbook (rendered as a form in the Prefect UI)."""

    topology: str | None = Field(None, description="Topology file; default $REGIONOPS_TOPOLOGY, else the lab's")
    cluster: str | None = Field(None, description="Cluster whose backup to verify; default the topology's only one")
    backup_id: str | None = Field(None, description="Backup to verify; default the newest complete one")
    region: str | None = Field(None, description="Region whose bucket to restore from; default the cluster's home region")
    scratch_dir: str | None = Field(
        None, description="Where the scratch data directory goes; default $REGIONOPS_SCRATCH_DIR or the system temp dir")
    start_timeout_seconds: int = Field(600, gt=0, description="How long PostgreSQL may take to start")
    recovery_timeout_seconds: float = Field(1800, gt=0, description="How long recovery may take to reach the target")
    notify: bool = Field(True, description="Post the run to Slack")


def scratch_root(param: str | None) -> Path:
    """The scratch parent directory: parameter, $REGIONOPS_SCRATCH_DIR, or <tmp>/regionops-scratch."""
    root = Path(param or os.environ.get("REGIONOPS_SCRATCH_DIR") or Path(tempfile.gettempdir()) / "regionops-scratch")
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)  # PostgreSQL's OS user must traverse it
    return root


@flow(name="restore-verify", on_failure=[report_failure], on_crashed=[report_failure])
def restore_verify(params: RestoreVerifyParams = RestoreVerifyParams()) -> RestoreVerification:
    """Restore a backup into a scratch instance, prove it, measure the restore time, tear it down."""
    topology = load_topology(params.topology)
    cluster_name, cluster = topology.cluster(params.cluster)
    region = params.region or home_region(topology, cluster)
    bucket = topology.regions[region].bucket
    reporter = RunReporter(topology, "restore-verify", f"Restore verification of {cluster_name}", slack=params.notify)
    reporter.start([f"cluster {cluster_name}, backup {params.backup_id or 'newest'} from {bucket}"])
    try:
        entry = bt.find_backup(topology, cluster_name, region, params.backup_id)
    except Exception as exc:
        reporter.fail(exc)
        raise
    manifest = entry.manifest
    assert manifest is not None
    reporter.step(f"verifying {manifest.sentence()}")

    run_id = str(current_run.get_id() or os.getpid())[:8]
    work = scratch_root(params.scratch_dir) / f"restore-verify-{cluster_name}-{manifest.backup_id}-{run_id}"
    data_dir, log_file = work / "data", work / "postgres.log"
    port = free_port()
    info = ConnInfo("127.0.0.1", port, cluster.database, cluster.user,
                    cluster.password.resolve() if cluster.password else None)
    phases: list[Phase] = []
    tables: list[TableCheck] = []
    error: RunbookError | None = None
    started = time.monotonic()
    restore_seconds = 0.0

    def done(phase: Phase) -> None:
        phases.append(phase)
        reporter.step(phase.sentence(), slack=False)

    try:
        done(rt.prepare_dir(str(work), cluster.os_user))
        done(rt.prepare_dir(str(data_dir), cluster.os_user))
        done(rt.fetch_and_unpack(topology, bucket, manifest, "base", str(data_dir), cluster.os_user))
        done(rt.verify_pg_backup(str(data_dir), manifest, cluster.os_user))
        done(rt.fetch_and_unpack(topology, bucket, manifest, "wal", str(data_dir), cluster.os_user))
        done(rt.configure_instance(topology, cluster_name, str(data_dir), manifest,
                                   f"verify-{manifest.backup_id}", port))
        done(rt.start_instance(str(data_dir), str(log_file), cluster.os_user, params.start_timeout_seconds))
        phase, _state = rt.wait_at_target(info, manifest, params.recovery_timeout_seconds)
        done(phase)
        restore_seconds = time.monotonic() - started
        phase, tables = rt.check_fingerprint(info, manifest)
        done(phase)
    except RunbookError as exc:
        error = exc
    finally:
        try:
            done(rt.remove_dir(str(work), cluster.os_user))
        except Exception as exc:  # noqa: BLE001 - reported; the verdict below still stands
            reporter.step(f"teardown failed: {exc}")

    result = RestoreVerification(
        backup_id=manifest.backup_id, cluster=cluster_name, bucket=bucket, passed=error is None, phases=phases,
        restore_seconds=round(restore_seconds, 3), total_seconds=round(time.monotonic() - started, 3),
        tables=tables, error=str(error) if error else None,
    )
    bt.record_verification(topology, cluster_name, region, Verification(
        backup_id=manifest.backup_id, status="passed" if result.passed else "failed",
        at=datetime.now(timezone.utc), restore_seconds=result.restore_seconds if result.passed else None,
        detail=result.sentence(), flow_run=str(current_run.get_id() or ""),
    ))
    publish(topology, RESTORE_VERIFY_JOB, cluster_name,
            restore_verification_gauges(datetime.now(timezone.utc), result.passed, result.restore_seconds), reporter)
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
