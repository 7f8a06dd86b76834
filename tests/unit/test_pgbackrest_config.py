"""pgBackRest configuration from the topology: repositories, residency, secrets, the file's mode."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from regionops.drivers.pgbackrest import (
    PgBackRest,
    RunOutput,
    archive_settings,
    parse_info,
    pgbackrest_error,
    plan_stanza,
    render_config,
    write_config,
)
from regionops.errors import ConfigurationError, ResidencyViolation, TransientError
from regionops.topology import load_topology, parse_topology

EXAMPLE = Path(__file__).parents[2] / "deployments" / "topologies" / "example-aws.yaml"


class RecordingRunner:
    """A runner that records each argv and answers as told (nothing runs)."""

    def __init__(self, exit_code: int = 0, stdout: str = "", stderr: str = ""):
        self.calls: list[list[str]] = []
        self.answer = (exit_code, stdout, stderr)

    def __call__(self, argv, *, timeout):
        self.calls.append(list(argv))
        code, out, err = self.answer
        return RunOutput(tuple(argv), code, out, err, 0.1)


def test_repositories_home_bucket_first_then_allowed_copies():
    topo = load_topology(EXAMPLE)
    plan = plan_stanza(topo, "core")
    assert [(r.index, r.region, r.bucket) for r in plan.repositories] == [
        (1, "eu", "example-regionops-backups-eu-west-1"),
        (2, "us", "example-regionops-backups-us-east-1"),
    ]
    assert [r.retention_full for r in plan.repositories] == [4, 2]  # copy_retention_full for the copy
    assert plan.config_path("us-1") == Path("/etc/pgbackrest/core-us-1.conf")


def test_eu_cluster_with_a_us_copy_target_is_refused_before_pgbackrest_runs():
    topo = load_topology(EXAMPLE)
    # The loader refuses this; a topology changed after loading (or a parameter) must meet the same rule.
    topo.clusters["customers-eu"].backup.copy_to.append("us")
    runner = RecordingRunner()
    with pytest.raises(ResidencyViolation) as err:
        PgBackRest.for_node(topo, "customers-eu", "eu-a", runner)
    assert "region us" in str(err.value) and "residency = [eu]" in str(err.value)
    assert runner.calls == []


def test_config_resolves_secret_references_and_is_written_0600(tmp_path, monkeypatch):
    doc = yaml.safe_load(EXAMPLE.read_text())
    cluster = doc["clusters"]["customers-eu"]
    cluster["os_user"] = None
    cluster["backup"]["pgbackrest"] |= {
        f: str(tmp_path / f) for f in ("config_dir", "spool_dir", "lock_dir", "log_dir")
    }
    topo = parse_topology(doc)
    monkeypatch.setenv("CUSTOMERS_EU_PGBACKREST_CIPHER", "s3cret-passphrase")
    plan = plan_stanza(topo, "customers-eu")
    text = render_config(topo, plan, "eu-b")
    assert "repo1-s3-bucket=example-regionops-backups-eu-west-1" in text
    assert "repo2-s3-bucket=example-regionops-backups-eu-central-1" in text
    assert "repo1-cipher-pass=s3cret-passphrase" in text and "repo1-cipher-type=aes-256-cbc" in text
    assert "repo1-s3-key-type=auto" in text  # no keys in the topology: the host's IAM role
    assert "repo1-s3-endpoint=s3.eu-west-1.amazonaws.com" in text
    assert "[customers-eu]" in text and "pg1-path=/var/lib/postgresql/15/main" in text
    assert "compress-type=lz4" in text and "archive-async=y" in text and "repo1-bundle=y" in text
    path = write_config(topo, plan, "eu-b")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    monkeypatch.delenv("CUSTOMERS_EU_PGBACKREST_CIPHER")
    with pytest.raises(ConfigurationError, match="CUSTOMERS_EU_PGBACKREST_CIPHER"):
        render_config(topo, plan, "eu-b")


def test_archive_command_names_the_nodes_own_config():
    plan = plan_stanza(load_topology(EXAMPLE), "core")
    settings = archive_settings(plan, "apac-1", "/usr/bin/pgbackrest")
    assert settings["archive_mode"] == "on"
    assert settings["archive_command"] == (
        "'/usr/bin/pgbackrest --config=/etc/pgbackrest/core-apac-1.conf --stanza=core archive-push %p'"
    )


def test_commands_go_through_the_runner_and_errors_carry_pgbackrests_message():
    plan = plan_stanza(load_topology(EXAMPLE), "core")
    runner = RecordingRunner(50, stderr="ERROR: [050]: unable to acquire lock on file '/tmp/pgbackrest/core.lock'")
    driver = PgBackRest(plan, "eu-1", runner, binary_path="/usr/bin/pgbackrest")
    with pytest.raises(TransientError, match="unable to acquire lock"):
        driver.backup("diff", repo=2)
    assert runner.calls == [
        [
            "/usr/bin/pgbackrest",
            "--config=/etc/pgbackrest/core-eu-1.conf",
            "--stanza=core",
            "--type=diff",
            "--repo=2",
            "--log-level-console=info",
            "backup",
        ]
    ]
    with pytest.raises(ConfigurationError, match="no repo3"):
        driver.backup("full", repo=3)
    assert "exited 1" in str(pgbackrest_error(RunOutput(("pgbackrest", "check"), 1, "", "boom", 0.0)))


def test_info_json_becomes_typed_backups():
    text = """[{"name": "core", "status": {"code": 0, "message": "ok"},
      "archive": [{"min": "000000010000000000000001", "max": "000000010000000000000009"}],
      "repo": [{"key": 1, "status": {"code": 0, "message": "ok"}}],
      "backup": [{"label": "20261124-120000F", "type": "full", "database": {"repo-key": 1},
                  "timestamp": {"start": 1795560913, "stop": 1795560915}, "error": false,
                  "info": {"size": 31418643, "repository": {"size": 6275536}},
                  "archive": {"start": "000000010000000000000005", "stop": "000000010000000000000006"},
                  "lsn": {"start": "0/5000028", "stop": "0/6000050"}, "prior": null}]}]"""
    info = parse_info(text, "core")
    assert info.newest().label == "20261124-120000F" and info.newest().lsn_stop == "0/6000050"
    assert "1 backup(s)" in info.sentence() and "full backup 20261124-120000F in repo1" in info.sentence()


def test_a_missing_pgbackrest_is_named_with_its_package(monkeypatch):
    from regionops.drivers import pgbackrest, pgbackrest_config

    monkeypatch.setattr(pgbackrest_config.shutil, "which", lambda name: None)
    with pytest.raises(ConfigurationError, match="apt-get install pgbackrest"):
        pgbackrest.binary()
