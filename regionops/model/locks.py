"""The names of the locks that guard a cluster or an application.

One place for each name: the runbooks take these locks (:mod:`regionops.runbook.locks`),
and the alert receiver names them in what it reports, without importing the runbooks.
"""

from __future__ import annotations


def lock_name(cluster: str) -> str:
    """The concurrency limit guarding changes to ``cluster``."""
    return f"regionops-cluster-{cluster}"


def drill_lock_name(cluster: str) -> str:
    """The limit allowing one DR drill of ``cluster`` at a time."""
    return f"regionops-drill-{cluster}"


def backup_lock_name(cluster: str) -> str:
    """The limit allowing one backup of ``cluster`` at a time."""
    return f"regionops-backup-{cluster}"


def release_lock_name(application: str) -> str:
    """The limit allowing one release of ``application`` at a time."""
    return f"regionops-release-{application}"
