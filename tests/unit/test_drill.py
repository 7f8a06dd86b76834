"""DR drill pieces without a lab: RTO/RPO from a journal, verdicts, consistency, rescue, parameters, commands."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from regionops.decisions.drill import Fingerprint, compare_fingerprints, judge, measure
from regionops.drivers.faults import CommandFaultInjector
from regionops.model import CanaryWrite
from regionops.model.faults import FaultInjectionFailed
from regionops.topology import Objectives, parse_topology

T0 = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


def w(seq: int, sent: float, acked: float | None, node: str = "eu-1") -> CanaryWrite:
    return CanaryWrite(
        seq=seq,
        sent_at=T0 + timedelta(seconds=sent),
        acked=acked is not None,
        acked_at=T0 + timedelta(seconds=acked) if acked is not None else None,
        node=node,
        error=None if acked is not None else "connection refused",
    )


JOURNAL = [
    w(1, -0.20, -0.19),
    w(2, -0.15, -0.14),
    w(3, -0.10, -0.09),
    w(4, -0.05, -0.04),  # acked by eu-1
    w(5, 0.00, None),
    w(6, 1.0, None),
    w(7, 2.0, None),  # outage
    w(8, 3.0, 3.02, "us-1"),
    w(9, 3.05, 3.07, "us-1"),
]


def test_rto_runs_from_the_fault_to_the_first_acknowledged_write_sent_after_it():
    m = measure(JOURNAL, T0, present_on_primary={1, 2, 3, 4, 8, 9})
    assert m.rto_seconds == pytest.approx(3.02)
    assert m.rpo_rows == 0 and m.rpo_seconds == 0 and m.lost_seqs == []
    assert m.unavailable_seconds == pytest.approx(3.06)  # from ack 4 (-0.04) to ack 8 (3.02)
    assert (m.writes_sent, m.writes_acknowledged) == (9, 6)


def test_rpo_counts_acknowledged_writes_missing_on_the_new_primary_and_the_time_they_span():
    m = measure(JOURNAL, T0, present_on_primary={1, 2, 8, 9})
    assert m.rpo_rows == 2 and m.lost_seqs == [3, 4]
    assert m.rpo_seconds == pytest.approx(0.06)  # seq 3 sent at -0.10, seq 4 acked at -0.04
    assert "RPO 2 acknowledged write(s) lost" in m.sentence()


def test_no_write_after_the_fault_means_rto_not_reached_and_the_objective_fails():
    m = measure(JOURNAL[:7], T0, present_on_primary={1, 2, 3, 4})
    assert m.rto_seconds is None
    # Unavailable from the last acknowledgement (-0.04) to the last write sent (2.0), and still then.
    assert m.unavailable_seconds == pytest.approx(2.04) and m.still_unavailable
    assert "still unavailable when the canary stopped" in m.sentence()
    rto, rpo = judge(m, Objectives(rto_seconds=30, rpo_seconds=5))
    assert not rto.passed and "not reached" in rto.sentence() and rpo.passed


def test_lost_bytes_are_the_wal_from_the_last_kept_write_to_the_last_lost_one():
    journal = [w(1, -0.2, -0.19), w(2, -0.15, -0.14), w(3, -0.1, -0.09), w(4, 3.0, 3.02, "us-1")]
    for write, lsn in zip(journal, ("0/3000000", "0/3000200", "0/3000450", "0/4000000"), strict=True):
        write.lsn = lsn
    m = measure(journal, T0, present_on_primary={1, 4})
    assert m.lost_seqs == [2, 3] and m.rpo_bytes == 0x450  # from write 1's position to write 3's
    assert "1104 bytes of WAL" in m.sentence()
    assert measure(journal, T0, present_on_primary={1, 2, 3, 4}).rpo_bytes == 0


def test_with_no_primary_to_read_the_rpo_is_unknown_and_fails_but_the_outage_is_measured():
    m = measure(JOURNAL[:7], T0, present_on_primary=None)
    assert m.rpo_rows is None and m.rpo_seconds is None and m.rpo_bytes is None
    assert "RPO unknown: no node answers as primary" in m.sentence() and m.unavailable_seconds == pytest.approx(2.04)
    rto, rpo = judge(m, Objectives(rto_seconds=30, rpo_seconds=5))
    assert not rto.passed and not rpo.passed and "RPO unknown" in rpo.sentence()


def test_verdicts_compare_with_the_objectives():
    m = measure(JOURNAL, T0, present_on_primary={1, 2, 8, 9})
    assert [v.passed for v in judge(m, Objectives(rto_seconds=3, rpo_seconds=0.05))] == [False, False]
    assert [v.passed for v in judge(m, Objectives(rto_seconds=4, rpo_seconds=1))] == [True, True]


def test_a_late_acknowledgement_is_reported_not_counted():
    late = w(5, 0.0, None)
    late.late_ack_at = T0 + timedelta(seconds=9)
    m = measure([*JOURNAL[:4], late, *JOURNAL[5:]], T0, present_on_primary={1, 2, 3, 4, 5, 8, 9})
    assert m.late_acks == [5] and m.writes_acknowledged == 6


def test_consistency_names_each_table_that_differs():
    same = {"public.orders": Fingerprint(rows=5, checksum="9")}
    check = compare_fingerprints(
        "us-1",
        {"us-1": same, "apac-1": same, "eu-1": {"public.orders": Fingerprint(rows=4, checksum="7")}},
        not_compared={},
    )
    assert not check.ok
    assert check.mismatches == ["public.orders on eu-1: 4 rows (checksum 7) vs 5 rows (checksum 9) on us-1"]
    assert compare_fingerprints("us-1", {"us-1": same, "apac-1": same}).ok


def test_a_bad_scenario_or_an_alert_started_switchover_is_a_named_parameter_error():
    from flows.dr_drill import DrillParams

    with pytest.raises(ValidationError, match="scenario"):
        DrillParams(scenario="meteor-strike")
    with pytest.raises(ValidationError, match="recovery_path alert does not apply to planned-switchover"):
        DrillParams(scenario="planned-switchover", recovery_path="alert")


def topology(commands: dict[str, str], timeout: float = 5):
    return parse_topology(
        {
            "name": "t",
            "regions": {
                "eu": {
                    "aws_region": "eu-west-1",
                    "residency": "eu",
                    "app_url": "http://eu",
                    "bucket": "b-eu",
                    "work_pool": "p-eu",
                }
            },
            "clusters": {
                "core": {
                    "nodes": {"eu-1": {"region": "eu", "host": "db1", "port": 5432, "data_dir": "/d"}},
                    "writer_record": "writer.core.example.com",
                }
            },
            "traffic": {"route53_zone": "example.com"},
            "drills": {"faults": {"driver": "command", "commands": commands, "timeout_seconds": timeout}},
        }
    )


def test_command_faults_run_the_templated_command_for_the_node():
    py = sys.executable
    injector = CommandFaultInjector(
        topology({"primary-crash": f"{py} -c \"print('kill {{node}} on {{host}}:{{port}}')\""})
    )
    done = injector.inject("primary-crash", "core", "eu-1")
    assert done.changed and "kill eu-1 on db1:5432" in done.sentence()


def test_a_failing_or_hanging_fault_command_is_a_named_refusal():
    py = sys.executable
    failing = CommandFaultInjector(topology({"primary-crash": f'{py} -c "import sys; sys.exit(3)"'}))
    with pytest.raises(FaultInjectionFailed, match="exited 3"):
        failing.inject("primary-crash", "core", "eu-1")
    hanging = CommandFaultInjector(topology({"primary-crash": f'{py} -c "import time; time.sleep(5)"'}, timeout=0.3))
    with pytest.raises(FaultInjectionFailed, match="did not finish within 0.3 s"):
        hanging.inject("primary-crash", "core", "eu-1")
    with pytest.raises(FaultInjectionFailed, match="no command for it"):
        hanging.check("region-outage", "core", "eu-1")


def test_an_unknown_fault_in_the_topology_is_named():
    from regionops.errors import TopologyError

    with pytest.raises(TopologyError, match="unknown fault"):
        topology({"meteor": "true"})


def test_a_planned_switchover_rto_is_its_write_outage():
    journal = [w(1, 0.0, 0.01), w(2, 0.1, 0.11), w(3, 0.2, 2.9), w(4, 3.0, 3.01)]
    m = measure(journal, T0, present_on_primary={1, 2, 3, 4}, planned=True)
    assert m.rto_seconds == m.unavailable_seconds == 2.79
    assert measure(journal, T0, present_on_primary={1, 2, 3, 4}).rto_seconds == 0.01


def test_consistency_names_a_replica_not_read_at_the_common_point():
    from regionops.lsn import Lsn
    from regionops.model import CommonPoint

    same = {"public.orders": Fingerprint(rows=5, checksum="9")}
    point = CommonPoint(
        primary="eu-1",
        lsn=Lsn.parse("0/5000060"),
        held_ms=12,
        nodes=["us-1"],
        missed={"apac-1": "had not replayed 0/5000060 within 0.8 s"},
    )
    check = compare_fingerprints("eu-1", {"eu-1": same, "us-1": same}, point=point)
    assert check.ok and check.nodes == ["us-1"]
    assert "apac-1" in check.not_compared and "0/5000060" in check.not_compared["apac-1"]
    assert "writers held 12 ms" in check.sentence()
