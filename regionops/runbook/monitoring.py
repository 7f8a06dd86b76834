"""What runbooks publish to the monitoring system: their job names and result gauges.

Publishing them, and silencing planned work's alerts, are steps through tasks:
:mod:`tasks.runbook_monitoring`.
"""

from __future__ import annotations

from datetime import datetime

from regionops.drivers.pushgateway import Gauge

BACKUP_JOB = "regionops-backup"
RESTORE_VERIFY_JOB = "regionops-restore-verify"


def backup_gauges(finished_at: datetime, size_bytes: int, duration_seconds: float) -> list[Gauge]:
    """What a successful backup publishes."""
    return [
        Gauge(
            name="regionops_backup_last_success_timestamp_seconds",
            help="End of the newest successful backup",
            value=finished_at.timestamp(),
        ),
        Gauge(
            name="regionops_backup_last_size_bytes",
            help="Bytes stored by the newest successful backup",
            value=float(size_bytes),
        ),
        Gauge(
            name="regionops_backup_last_duration_seconds",
            help="Duration of the newest successful backup",
            value=duration_seconds,
        ),
    ]


def restore_verification_gauges(at: datetime, passed: bool, restore_seconds: float) -> list[Gauge]:
    """What a restore verification publishes, pass or fail."""
    return [
        Gauge(
            name="regionops_restore_verification_last_timestamp_seconds",
            help="When the last verification ended",
            value=at.timestamp(),
        ),
        Gauge(
            name="regionops_restore_verification_last_passed",
            help="1 when the last verification passed",
            value=1.0 if passed else 0.0,
        ),
        Gauge(
            name="regionops_restore_verification_restore_seconds",
            help="Measured restore time of the last pass",
            value=restore_seconds,
        ),
    ]
