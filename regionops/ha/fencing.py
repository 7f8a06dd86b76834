"""Fence markers: a record that a node must not be written to, promoted or pointed at by DNS.

A failover fences the old primary.  When the old primary can be stopped, it is; when it
cannot be reached, stopping is impossible, so the fence is this marker: every runbook
reads it before promoting a node or pointing the writer record at it, and the report
says the node is fenced rather than stopped.  Replica resync clears the marker once the
node streams from the new primary again.

Markers are small JSON files under ``<state_dir>/fences/<cluster>/<node>.json``, written
atomically so a crash mid-write never leaves a half marker that reads as "not fenced".
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, Field

from regionops.lsn import Lsn
from regionops.topology import Topology

DEFAULT_STATE_DIR = Path.home() / ".local" / "state" / "regionops"


class FenceMarker(BaseModel):
    """Why and when a node was fenced, and what was known about it then."""

    cluster: str
    node: str
    fenced_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    stopped: bool = Field(description="the node was stopped (True) or could only be marked (False)")
    reason: str
    last_lsn: Lsn | None = None
    timeline: int | None = None
    by: str | None = Field(None, description="the run that fenced it")

    def sentence(self) -> str:
        how = "stopped and marked fenced" if self.stopped else "marked fenced (it could not be stopped)"
        return f"{self.node} of {self.cluster} was {how} at {self.fenced_at:%Y-%m-%d %H:%M:%S} UTC: {self.reason}"


class FenceRegistry:
    """The fence markers of one environment."""

    def __init__(self, state_dir: str | os.PathLike[str]):
        self.root = Path(state_dir) / "fences"

    @classmethod
    def for_topology(cls, topology: Topology) -> FenceRegistry:
        """Markers in the topology's state directory (or the user's state directory when unset)."""
        return cls(topology.state_dir or DEFAULT_STATE_DIR)

    def _path(self, cluster: str, node: str) -> Path:
        return self.root / cluster / f"{node}.json"

    def mark(self, marker: FenceMarker) -> Path:
        """Write (or replace) the node's marker; returns its path."""
        path = self._path(marker.cluster, marker.node)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".fence-")
        with os.fdopen(fd, "w") as f:
            f.write(marker.model_dump_json(indent=2))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    def get(self, cluster: str, node: str) -> FenceMarker | None:
        """The node's marker, if it is fenced."""
        path = self._path(cluster, node)
        try:
            return FenceMarker.model_validate_json(path.read_text())
        except FileNotFoundError:
            return None

    def fenced(self, cluster: str) -> dict[str, FenceMarker]:
        """Every fenced node of ``cluster``."""
        folder = self.root / cluster
        if not folder.is_dir():
            return {}
        markers = (FenceMarker.model_validate_json(p.read_text()) for p in sorted(folder.glob("*.json")))
        return {m.node: m for m in markers}

    def clear(self, cluster: str, node: str) -> bool:
        """Remove the node's marker.  True when there was one."""
        try:
            self._path(cluster, node).unlink()
            return True
        except FileNotFoundError:
            return False


class OldPrimaryFence(BaseModel):
    """How a failover fenced the old primary: stopped or not, what was done on disk, where the marker is."""

    node: str
    stopped: bool
    notes: list[str]
    marker_path: str

    def sentence(self) -> str:
        state = "stopped" if self.stopped else "NOT stopped (unreachable): fenced by marker only"
        return (f"fenced {self.node} ({state}): {'; '.join(self.notes)}; fence marker {self.marker_path} keeps "
                f"every runbook and the writer record away from it until replica-resync rebuilds it")
