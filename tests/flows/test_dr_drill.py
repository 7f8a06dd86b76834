"""DR drills on the real lab: faults, recovery, RTO/RPO from the canary's writes, rollback, trend.

The drills run on the session lab (the alert path needs its served deployments and the
alert receiver) and each ends with the original layout restored: eu-1 primary, both
replicas streaming from it.  Every test checks that before it hands the lab on.
"""

from __future__ import annotations

import pytest
from prefect import get_client

from flows.dr_drill import DrillParams, dr_drill, trend_key
from regionops.drivers.canary import canary_rows
from tests import ha_tools as ha

pytestmark = pytest.mark.lab


def _params(lab, **kw) -> DrillParams:
    return DrillParams(topology=str(lab.cfg.topology_path), confirmation_seconds=2, **kw)


def _trend_rows(cluster: str = "core") -> int:
    from prefect.artifacts import Artifact
    import json

    art = Artifact.get(trend_key(cluster))
    if art is None:
        return 0
    data = art.data if isinstance(art.data, list) else json.loads(art.data)
    return len(data)


def test_planned_switchover_drill_loses_nothing_and_restores_the_layout(lab):
    ha.expect_layout(lab, "eu-1")
    rows_before = _trend_rows()
    state = dr_drill(_params(lab, scenario="planned-switchover", node="us-1"), return_state=True)
    result = state.result()
    assert result.recovery_ok, result.recovery
    assert result.new_primary == "us-1"
    m = result.measurement
    assert m is not None and m.rpo_rows == 0 and m.rto_seconds is not None
    # independently: every write the canary saw acknowledged is on the new primary (and on eu-1 now)
    on_primary = canary_rows(lab.topology(), "core", "eu-1", result.canary_run_id)
    assert set(result.acknowledged) <= on_primary and len(result.acknowledged) >= 10
    assert result.consistency is not None and result.consistency.ok, result.consistency
    assert result.rollback_ok and result.steady_after and result.final_consistency.ok
    assert result.ok, result.sentence()
    ha.expect_layout(lab, "eu-1")
    assert ha.writer(lab) == "eu-1"
    report = ha.report_markdown(ha.run_id(state))
    assert "RTO" in report and "RPO" in report and "pass" in report
    assert _trend_rows() == rows_before + 1
