"""Scenarios: the lab survives its own restart (issue 11), on a private lab whose primary moves.

- A backup is taken, the primary crashes, failover promotes us-1 (eu-1 fenced); the lab
  is stopped and started: the writer record names us-1, eu-1 stays stopped and fenced,
  the lab says it is not healthy and what to run, writes through every app land on us-1.
  Replica resync repairs eu-1; after another restart the lab is healthy, the backup
  taken before the restarts is still listed and restore verification proves it.
- Two primaries at once, or none, and the lab never calls itself healthy: it names the
  nodes and what to run, and ``up`` leaves the writer record where it is.

Flows run on the session lab's Prefect server (see ``ha_tools.private_cluster``).
"""

from __future__ import annotations

import pytest

from flows.failover import FailoverParams, failover
from flows.replica_resync import ResyncParams, replica_resync
from flows.restore_verify import RestoreVerifyParams, restore_verify
from regionops.backup.scratch import list_sets
from regionops.drivers.appwrite import HttpAppWriter
from regionops.drivers.backupsql import BackupSql
from regionops.lab import pglab
from regionops.lab.lab import Lab, LabStatus
from regionops.waiting import poll_until
from tests import ha_tools as ha
from tests import labtools
from tests.pgbackrest_tools import take_backup

pytestmark = pytest.mark.lab

TABLE = "public.app_events"


@pytest.fixture(scope="module")
def ha_lab(lab):
    """A cluster of this module's own (its primary moves); runs go to the session lab's Prefect server."""
    with ha.private_cluster() as cluster:
        yield cluster


def restart(lab: Lab) -> LabStatus:
    """``lab down`` then ``lab up`` (no Prefect server of its own), as a user would the next day."""
    held = lab.down(progress=lambda m: None)
    assert held == [], held
    assert not any(pglab.pgctl(lab.cfg, n).is_running() for n in ("eu-1", "us-1", "apac-1"))
    return lab.up(progress=lambda m: None, with_prefect=False)


def unhealthy_parts(status: LabStatus) -> list[str]:
    return [c.name for c in status.components if not c.healthy and c.name not in labtools.PREFECT_PARTS]


def write_through_every_app(lab: Lab) -> dict[str, str]:
    """region -> the node a write through that region's app landed on (each write must be accepted)."""
    writer = HttpAppWriter(timeout=5)
    landed = {}
    for region, spec in lab.topology().regions.items():
        w = writer.write(region, spec.app_url, f"after restart via {region}")
        assert w.accepted, w.sentence()
        landed[region] = w.node
    return landed


def test_restart_after_failover_keeps_primary_fence_and_backups(ha_lab):
    lab = ha_lab
    topo = str(lab.cfg.topology_path)
    ha.expect_layout(lab, "eu-1")
    # Given a backup of core (its fingerprint known) and rows written after it
    labtools.sql(lab, "eu-1").query(
        "INSERT INTO app_events (region, payload) SELECT 'eu', 'before-backup ' || g FROM generate_series(1, 200) g"
    )
    taken = take_backup(lab, "core", "full")
    expected = taken.fingerprint[TABLE]
    ha.write_rows(lab, 5)

    # And eu-1 crashed and failover promoted us-1 (eu-1 fenced, stopped)
    ha.crash(lab, "eu-1")
    moved = failover(
        FailoverParams(
            topology=topo,
            grace_seconds=1.5,
            probes=3,
            probe_timeout_seconds=1,
            reason="test: eu-1 crashed before a lab restart",
            lock_wait_seconds=15,
        )
    )
    assert moved.ok and moved.new_primary == "us-1"

    # When the lab is stopped and started
    status = restart(lab)

    # Then the writer record names the real primary, the fence is kept (eu-1 left stopped) ...
    assert ha.writer(lab) == "us-1"
    assert "eu-1" in ha.fences(lab) and not pglab.pgctl(lab.cfg, "eu-1").is_running()
    assert ha.state(lab, "us-1").role == "primary" and ha.streams_from(lab, "apac-1", "us-1")
    # ... the lab says it is not healthy, which node, and what to run
    assert not status.healthy and not status.cluster_healthy
    assert any("eu-1" in p for p in status.problems)
    assert any("replica-resync" in a and "eu-1" in a for a in status.advice), status.advice
    # ... and a write through every regional app lands on us-1
    assert write_through_every_app(lab) == {"eu": "us-1", "us": "us-1", "apac": "us-1"}

    # When replica resync repairs eu-1 and the lab restarts once more
    resync = replica_resync(ResyncParams(topology=topo, verify_timeout_seconds=60, lock_wait_seconds=15))
    assert resync.ok
    status = restart(lab)

    # Then it is healthy by region health's own checks, us-1 still primary
    assert status.cluster_healthy and unhealthy_parts(status) == [], (status.problems, unhealthy_parts(status))
    ha.expect_layout(lab, "us-1")
    assert ha.writer(lab) == "us-1"
    assert write_through_every_app(lab) == {"eu": "us-1", "us": "us-1", "apac": "us-1"}
    # And the backup taken before both restarts is listed and restore verification proves it
    assert taken.label in {s.label for s in list_sets(lab.topology(), "core", 1)}
    verdict = restore_verify(RestoreVerifyParams(topology=topo, label=taken.label, notify=False))
    assert verdict.passed and taken.restore_point in verdict.target, verdict.sentence()
    restored = {t.table: (t.restored_rows, t.restored_checksum) for t in verdict.tables}
    assert restored[TABLE] == (expected.rows, expected.checksum)
    assert restored == {name: (f.rows, f.checksum) for name, f in taken.fingerprint.items()}
    now = BackupSql(labtools.sql(lab, "us-1").info).fingerprints([TABLE])[TABLE]
    assert now["rows"] > expected.rows  # the rows written after the backup are not in the restore


def test_two_primaries_or_none_never_report_healthy(ha_lab):
    lab = ha_lab
    primary = next(n for n, s in ha.layout(lab).items() if s == "primary")
    replica = next(n for n in ("eu-1", "us-1", "apac-1") if n != primary)
    # Given a replica promoted beside the primary: split brain
    labtools.sql(lab, replica, "postgres").query("SELECT pg_promote()")
    poll_until(lambda: ha.state(lab, replica).role == "primary", timeout=10, what=f"{replica} promoted")

    # Then status is not healthy and names both nodes and the runbook to run
    status = lab.status()
    assert not status.healthy and not status.cluster_healthy
    assert any("split brain" in p and primary in p and replica in p for p in status.problems), status.problems
    assert any("replica-resync" in a and f"rewind {replica} onto {primary}" in a for a in status.advice), status.advice
    bad = {c.name for c in status.components if not c.healthy}
    assert {f"postgres {primary}", f"postgres {replica}"} <= bad
    # And `lab up` leaves the writer record on the node whose history the runbooks keep
    status = lab.up(progress=lambda m: None, with_prefect=False)
    assert not status.healthy and ha.writer(lab) == primary

    # Given no primary at all (both crashed)
    ha.crash(lab, primary)
    ha.crash(lab, replica)
    status = lab.status()
    assert not status.healthy and not status.cluster_healthy
    assert any("no reachable primary" in p for p in status.problems)
    assert any("regionops run failover" in a and f"{primary} is down" in a for a in status.advice), status.advice
