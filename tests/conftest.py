"""Shared fixtures.  The `lab` fixture is the real three-region lab on free ports.

One lab per test session: PostgreSQL 15 x3, moto's server, the Slack sink, three apps
and a Prefect server.  Flows run against that Prefect server (a real one), so runs,
artifacts and triggers behave as in production.  Tests that break the lab on purpose
restore it in their own teardown (see `tests/labtools.py`); tests that change which
node is primary use a lab of their own (`started_lab`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


@contextmanager
def started_lab(with_prefect: bool = True, with_monitoring: bool = False, wan: str = "off") -> Iterator[Lab]:  # noqa: F821
    """A running lab in a fresh directory on free ports; stopped and removed afterwards.

    Without monitoring by default: the session lab's faults (stopped replicas, paused
    replay) must not start alert-driven runbooks under other tests' feet.  The alert
    path is tested on labs of its own (tests/flows/test_alert_path.py).

    While it runs, Prefect clients in this process (and the environment of child
    processes) point at the lab's Prefect server.
    """
    from prefect.settings import temporary_settings

    from regionops.lab.lab import Lab, lab_env
    from regionops.lab.prefect_server import lab_prefect_settings

    lab_dir = Path(tempfile.mkdtemp(prefix="regionops-test-lab-"))
    os.chmod(lab_dir, 0o755)  # PostgreSQL runs as another user when tests run as root
    lab = Lab.open(lab_dir, free_ports=True, wan=wan)
    env = lab_env(lab.cfg)
    old = {k: os.environ.get(k) for k in env}
    try:
        status = lab.up(progress=lambda m: None, with_prefect=with_prefect, with_monitoring=with_monitoring)
        unhealthy = [
            c
            for c in status.components
            if not c.healthy
            and (
                with_prefect
                or c.name not in ("prefect database", "prefect server", "runbook deployments", "alert receiver")
            )
        ]
        assert not unhealthy, unhealthy
        os.environ.update(env)
        with temporary_settings(updates=lab_prefect_settings(lab.cfg)):
            yield lab
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _keep_logs(lab_dir)
        lab.down(progress=lambda m: None, purge=True)


def _keep_logs(lab_dir: Path) -> None:
    """Copy the lab's process logs to $REGIONOPS_KEEP_LAB_LOGS (CI prints their tails when a test failed)."""
    keep = os.environ.get("REGIONOPS_KEEP_LAB_LOGS")
    if keep and (lab_dir / "logs").is_dir():
        shutil.copytree(lab_dir / "logs", Path(keep) / lab_dir.name, dirs_exist_ok=True)


@contextmanager
def running_lab(lab_dir: str) -> Iterator[Lab]:  # noqa: F821
    """A lab that already runs (``regionops lab up --lab-dir DIR``), for quick runs while developing.

    Left running afterwards.  CI never sets REGIONOPS_TEST_LAB, so it always builds its own.
    """
    from prefect.settings import temporary_settings

    from regionops.lab.lab import Lab, lab_env
    from regionops.lab.prefect_server import lab_prefect_settings

    lab = Lab.open(Path(lab_dir))
    env = lab_env(lab.cfg)
    os.environ.update(env)
    with temporary_settings(updates=lab_prefect_settings(lab.cfg)):
        yield lab


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:  # noqa: F821
    """The session's shared lab (eu-1 primary); tests must leave it as they found it."""
    existing = os.environ.get("REGIONOPS_TEST_LAB")
    with running_lab(existing) if existing else started_lab() as running:
        yield running


@pytest.fixture(scope="session")
def topology(lab):
    """The lab's topology, as written by the lab."""
    return lab.topology()
