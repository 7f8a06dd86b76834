"""A Prefect progress artifact that follows a long step without flooding the API."""

from __future__ import annotations

import time
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact


class ProgressArtifact:
    """Create a progress artifact now; update it at most every ``every_seconds`` seconds."""

    def __init__(self, key: str, description: str, every_seconds: float = 5):
        self.description = description
        self.every_seconds = every_seconds
        self._last = 0.0
        self._id: UUID | None = None
        try:
            self._id = create_progress_artifact(progress=0.0, key=key, description=description)
        except Exception as exc:  # noqa: BLE001 - a UI nicety must never fail the step
            get_run_logger().warning("could not create progress artifact %s: %s", key, exc)

    def update(self, fraction: float | None, description: str | None = None, force: bool = False) -> None:
        """Show ``fraction`` (0..1) done; silently skipped when called too often."""
        now = time.monotonic()
        if self._id is None or fraction is None or (not force and now - self._last < self.every_seconds):
            return
        self._last = now
        try:
            update_progress_artifact(
                self._id, progress=round(100 * fraction, 1), description=description or self.description
            )
        except Exception as exc:  # noqa: BLE001 - see above
            get_run_logger().warning("could not update progress artifact: %s", exc)
