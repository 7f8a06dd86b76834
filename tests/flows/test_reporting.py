"""Run reporting against the lab: one Slack thread per run, artifacts, failure hook."""

from __future__ import annotations

import pytest
from prefect import flow, get_client

from flows.region_health import RegionHealthParams, region_health
from regionops.runbook.reporting import RunReporter
from regionops.topology import load_topology
from tests import labtools

pytestmark = pytest.mark.lab


@flow(name="reporting-demo")
def reporting_demo(topology_path: str) -> str:
    reporter = RunReporter(load_topology(topology_path), "reporting-demo", "Reporting demo")
    reporter.start(["cluster core"])
    reporter.step("fenced eu-1")
    reporter.step("promoted us-1 at LSN 0/5000060 on timeline 2")
    return reporter.finish("succeeded", ["all done"], tables={"steps": [{"n": 1, "what": "fence"}]})


def test_one_thread_per_run_with_start_steps_and_summary(lab):
    labtools.clear_slack(lab)
    markdown = reporting_demo(str(lab.cfg.topology_path))
    messages = labtools.slack_messages(lab)
    roots = [m for m in messages if not m.get("thread_ts") or m["thread_ts"] == m["ts"]]
    assert len(roots) == 1
    root = roots[0]
    replies = [m for m in messages if m.get("thread_ts") == root["ts"] and m["ts"] != root["ts"]]
    texts = [m["text"] for m in replies]
    assert any("fenced eu-1" in t for t in texts)
    assert any("promoted us-1 at LSN 0/5000060" in t for t in texts)
    assert any("all done" in t for t in texts)
    assert "succeeded" in root["text"].lower() and "/runs/flow-run/" in str(root)
    assert root["blocks"]
    assert "## Steps" in markdown and "promoted us-1" in markdown


def test_report_artifact_is_stored_on_the_server(lab):
    reporting_demo(str(lab.cfg.topology_path))
    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_latest_artifacts(limit=100)}
    assert {"reporting-demo-report", "reporting-demo-steps"} <= keys


def test_a_failed_runbook_is_posted_to_slack_by_its_state_hook(lab):
    labtools.clear_slack(lab)
    state = region_health(RegionHealthParams(topology=str(lab.cfg.topology_path), cluster="nope"), return_state=True)
    assert state.is_failed()
    texts = " ".join(m["text"] for m in labtools.slack_messages(lab))
    assert "region-health failed" in texts and "unknown cluster 'nope'" in texts


def test_slack_down_is_shown_in_the_report(lab):
    with labtools.process_stopped(lab, "slack-sink"):
        markdown = reporting_demo(str(lab.cfg.topology_path))
    assert "## Slack delivery" in markdown and "failed" in markdown
