"""The shipped monitoring config: promtool and amtool accept it, the rules pass their tests,
the generated files match the generator, and the generator follows the topology.

promtool and amtool are required (CI installs them): a missing binary fails the test,
naming its Debian package.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from regionops.alerting.intents import ALERT_INTENTS
from regionops.monitoring import RULES_DIR, SHIPPED_DIR
from regionops.monitoring.alertmanager import LAB_TIMINGS, RUNBOOK_RECEIVER, SLACK_RECEIVER
from regionops.monitoring.files import AlertmanagerInputs, render, rule_files, shipped_files, write
from regionops.monitoring.prometheus import cap_for, parse_duration, prometheus_config, threshold_rules
from regionops.monitoring.tools import AMTOOL, PROMTOOL, Tool
from regionops.topology import parse_topology
from tests.unit.test_topology import base


def run_tool(tool: Tool, *args: str, cwd: Path = SHIPPED_DIR) -> subprocess.CompletedProcess:
    binary = tool.find()
    assert binary, tool.missing()
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_promtool_accepts_the_shipped_prometheus_config_and_its_rules():
    done = run_tool(PROMTOOL, "check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 4 rule files found" in done.stdout


def test_the_alert_rules_pass_their_promtool_tests():
    tests = sorted(str(p.relative_to(SHIPPED_DIR)) for p in (SHIPPED_DIR / "tests").glob("*_test.yml"))
    assert len(tests) == 4
    done = run_tool(PROMTOOL, "test", "rules", *tests)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == 4


def test_amtool_accepts_the_shipped_alertmanager_config():
    done = run_tool(AMTOOL, "check-config", "alertmanager.yml")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (["alertname=PostgresPrimaryDown", "cluster=core"], f"{RUNBOOK_RECEIVER},{SLACK_RECEIVER}"),
        (["alertname=PostgresReplicationBroken", "cluster=core", "node=us-1"], f"{RUNBOOK_RECEIVER},{SLACK_RECEIVER}"),
        (["alertname=PostgresReplicaLagging", "cluster=core", "node=us-1"], f"{RUNBOOK_RECEIVER},{SLACK_RECEIVER}"),
        (["alertname=AppDown", "region=us"], SLACK_RECEIVER),
        (["alertname=BackupTooOld", "cluster=core"], SLACK_RECEIVER),
    ],
)
def test_runbook_alerts_reach_the_receiver_and_every_alert_reaches_slack(labels, receivers):
    done = run_tool(AMTOOL, "config", "routes", "test", "--config.file=alertmanager.yml", *labels)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == receivers


def test_generated_files_are_up_to_date():
    for name, text in shipped_files().items():
        assert (SHIPPED_DIR / name).read_text() == text, (
            f"deployments/monitoring/{name} is stale: run `python -m regionops.monitoring --write-shipped`"
        )


def test_every_alert_that_starts_a_runbook_has_a_rule():
    rules = [r for path in rule_files() for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]
    alerts = {r["alert"] for r in rules if "alert" in r}
    assert set(ALERT_INTENTS) <= alerts
    for rule in rules:
        if "alert" in rule:
            assert rule["annotations"]["runbook"].startswith("runbooks/"), rule["alert"]
            assert (SHIPPED_DIR.parents[1] / rule["annotations"]["runbook"]).exists(), rule["annotations"]["runbook"]


def topology(**monitoring):
    doc = base()
    doc["clusters"]["core"]["nodes"]["us-1"]["exporter_port"] = 19187
    doc["clusters"]["core"]["health"] = {"max_lag_bytes": 1000, "max_lag_seconds": 7}
    doc["monitoring"] = monitoring
    return parse_topology(doc)


def test_scrape_config_labels_every_node_and_app_from_the_topology():
    topo = topology(alertmanager_url="http://am:9093", pushgateway_url="http://pg:9091", scrape_interval_seconds=1)
    config = prometheus_config(topo, ["rules/x.yml"])
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert jobs["postgres"]["static_configs"] == [
        {"targets": ["h1:9187"], "labels": {"cluster": "core", "node": "eu-1", "region": "eu"}},
        {"targets": ["h2:19187"], "labels": {"cluster": "core", "node": "us-1", "region": "us"}},
    ]
    assert jobs["app"]["static_configs"] == [
        {"targets": ["eu:80"], "labels": {"region": "eu"}},
        {"targets": ["us:80"], "labels": {"region": "us"}},
    ]
    assert jobs["pushgateway"]["honor_labels"] is True
    assert config["global"]["scrape_interval"] == "1s"
    assert config["alerting"]["alertmanagers"][0]["static_configs"] == [{"targets": ["am:9093"]}]
    assert config["global"]["external_labels"] == {"environment": "t"}


def test_thresholds_come_from_the_topology():
    rules = threshold_rules(topology(thresholds={"app_p95_seconds": 0.25}))["groups"][0]["rules"]
    by = {(r["record"], tuple(r["labels"].items())): r["expr"] for r in rules}
    assert by[("regionops:threshold_replica_lag_bytes", (("cluster", "core"),))] == "vector(1000)"
    assert by[("regionops:threshold_replica_lag_seconds", (("cluster", "core"),))] == "vector(7)"
    assert by[("regionops:threshold_app_p95_seconds", (("region", "us"),))] == "vector(0.25)"
    assert by[("regionops:threshold_backup_max_age_seconds", (("cluster", "core"),))] == "vector(93600)"


def test_cap_for_never_cuts_below_a_rules_min_for():
    doc = {
        "groups": [
            {
                "name": "g",
                "rules": [
                    {"alert": "A", "expr": "1", "for": "15s", "annotations": {"min_for": "5s"}},
                    {"alert": "B", "expr": "1", "for": "4s", "annotations": {"min_for": "5s"}},
                    {"alert": "C", "expr": "1", "for": "15s", "annotations": {"min_for": "1s"}},
                ],
            }
        ]
    }
    assert [r["for"] for r in cap_for(doc, 2)["groups"][0]["rules"]] == ["5s", "4s", "2s"]


def test_the_shipped_config_pages_a_dead_primary_within_seconds():
    """Scrape and evaluation every 2 s, a refusing primary after 4 s, runbook alerts not batched."""
    prom = yaml.safe_load((SHIPPED_DIR / "prometheus.yml").read_text())["global"]
    assert (prom["scrape_interval"], prom["evaluation_interval"]) == ("2s", "2s")
    am = yaml.safe_load((SHIPPED_DIR / "alertmanager.yml").read_text())["route"]
    runbooks = next(r for r in am["routes"] if r["receiver"] == RUNBOOK_RECEIVER)
    assert (runbooks["group_wait"], runbooks["group_interval"]) == ("0s", "5s")
    # Humans get one Slack message per incident, batched as before.
    assert (am["group_wait"], am["group_interval"]) == ("10s", "60s")
    rules = yaml.safe_load((RULES_DIR / "postgres.rules.yml").read_text())
    down = {
        r["labels"]["condition"]: r
        for g in rules["groups"]
        for r in g["rules"]
        if r.get("alert") == "PostgresPrimaryDown"
    }
    assert {c: r["for"] for c, r in down.items()} == {
        "primary-refuses": "8s",
        "primary-unreachable": "15s",
        "no-writable-node": "30s",
    }


def test_cap_for_shortens_only_longer_waits():
    doc = {
        "groups": [
            {
                "name": "g",
                "rules": [
                    {"alert": "A", "expr": "1", "for": "2m"},
                    {"alert": "B", "expr": "1", "for": "1s"},
                    {"record": "r", "expr": "1"},
                ],
            }
        ]
    }
    capped = cap_for(doc, 3)
    assert [r.get("for") for r in capped["groups"][0]["rules"]] == ["3s", "1s", None]
    assert doc["groups"][0]["rules"][0]["for"] == "2m"  # the original is untouched
    assert [parse_duration(d) for d in ("1h", "1m30s", "500ms", "15s")] == [3600, 90, 0.5, 15]


def test_a_lab_style_config_with_capped_rules_passes_promtool(tmp_path):
    topo = topology(
        alertmanager_url="http://127.0.0.1:1",
        alert_receiver_url="http://127.0.0.1:2/alerts",
        scrape_interval_seconds=1,
        max_alert_for_seconds=2,
    )
    doc = base()
    doc["notifications"] = {"slack": {"channel": "#c", "token": {"file": "/nonexistent"}}}
    files = render(
        topo.model_copy(update={"notifications": parse_topology(doc).notifications}),
        "test",
        AlertmanagerInputs(
            receiver_token_file=str(tmp_path / "t"), slack_token_file=str(tmp_path / "s"), timings=LAB_TIMINGS
        ),
    )
    write(tmp_path, files)
    assert set(files) == {
        "prometheus.yml",
        "alertmanager.yml",
        "thresholds.rules.yml",
        *(f"rules/{p.name}" for p in RULES_DIR.glob("*.rules.yml")),
    }
    postgres = yaml.safe_load(files["rules/postgres.rules.yml"])
    fors = {
        (r["alert"], r["labels"].get("condition")): r["for"]
        for g in postgres["groups"]
        for r in g["rules"]
        if "for" in r
    }
    # A refusing primary fires after 2 s; the conditions a 3 s stall also meets keep 8 s.
    assert fors.pop(("PostgresPrimaryDown", "primary-refuses")) == "8s"
    assert fors.pop(("PostgresPrimaryDown", "primary-unreachable")) == "8s"
    assert fors.pop(("PostgresPrimaryDown", "no-writable-node")) == "8s"
    assert set(fors.values()) == {"2s"}
    done = run_tool(PROMTOOL, "check", "config", "prometheus.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    done = run_tool(AMTOOL, "check-config", "alertmanager.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    am = yaml.safe_load(files["alertmanager.yml"])
    assert am["route"]["group_wait"] == "500ms"
    # The runbook route does not batch: a second of group wait is a second of downtime.
    assert am["route"]["routes"][0]["receiver"] == RUNBOOK_RECEIVER
    assert am["route"]["routes"][0]["group_wait"] == "0s"
