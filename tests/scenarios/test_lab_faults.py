"""A person injects the drill's faults by hand (`regionops lab fault`) and undoes them (`regionops lab heal`)."""

from __future__ import annotations

import pytest

from regionops.cli import main
from regionops.lab import pglab
from regionops.lab.processes import running_pid
from tests import ha_tools as ha
from tests import labtools

pytestmark = pytest.mark.lab


def test_freeze_then_heal_resumes_the_primary(lab, capsys):
    ha.expect_layout(lab, "eu-1")
    with ha.watching_primaries(lab) as watch:
        assert main(["lab", "fault", "primary-freeze", "--lab-dir", str(lab.cfg.lab_dir)]) == 0
        assert "froze eu-1" in capsys.readouterr().out
        assert pglab.pgctl(lab.cfg, "eu-1").is_frozen()
        assert not ha.state(lab, "eu-1").reachable  # a frozen server answers nobody
        assert main(["lab", "heal", "--lab-dir", str(lab.cfg.lab_dir)]) == 0
        assert "resumed frozen eu-1" in capsys.readouterr().out
        ha.expect_layout(lab, "eu-1", timeout=30)
    assert watch.looks > 1 and not watch.seen_two, watch.seen_two  # a look at a frozen node takes 2 s


def test_region_outage_then_heal_restarts_the_app_and_the_unreplaced_primary(lab, capsys):
    ha.expect_layout(lab, "eu-1")
    acked = ha.write_rows(lab, 5, region="us")
    assert main(["lab", "fault", "region-outage", "--lab-dir", str(lab.cfg.lab_dir)]) == 0
    assert running_pid(lab.cfg.lab_dir, "app-eu") is None
    assert not pglab.pgctl(lab.cfg, "eu-1").is_running()
    assert main(["lab", "heal", "--lab-dir", str(lab.cfg.lab_dir)]) == 0
    out = capsys.readouterr().out
    assert "started app(s) eu again" in out and "started eu-1" in out
    ha.expect_layout(lab, "eu-1", timeout=30)
    assert set(acked) <= ha.row_ids(lab, "eu-1")  # crash recovery kept every acknowledged write
    assert ha.write_rows(lab, 1, region="eu")
    labtools.wait_steady(lab)


def test_an_unknown_fault_is_a_usage_error(lab, capsys):
    with pytest.raises(SystemExit):
        main(["lab", "fault", "meteor", "--lab-dir", str(lab.cfg.lab_dir)])
    assert "invalid choice: 'meteor'" in capsys.readouterr().err
