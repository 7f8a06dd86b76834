"""What a run is about to disturb, written down before it does, for the hook that runs if it is cancelled.

A cancelled run's process is killed: its ``finally`` blocks never run.  So a run that
disturbs a cluster on purpose (the DR drill injects a fault) records first what it is
about to do, in a small JSON file under the topology's ``state_dir``; the flow's
cancellation hook (:func:`undo_on_cancel`) releases the run's locks, reads the record
and undoes what it names.  A run that ends, however it ends, removes its record.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from regionops.drivers.notify import notifier_for
from regionops.runbook.reporting import topology_from_parameters
from regionops.runbook.run_leases import release_run_leases
from regionops.topology import Topology

log = logging.getLogger(__name__)

# Undo what a cancelled run's journal names: (topology, cluster, record) -> what was done, as sentences.
Undo = Callable[[Topology, str, dict[str, Any]], list[str]]


class RunJournal:
    """The record of one runbook's run on one cluster (none when the topology has no ``state_dir``)."""

    def __init__(self, topology: Topology, runbook: str, cluster: str):
        self.path = Path(topology.state_dir) / "journals" / f"{runbook}-{cluster}.json" if topology.state_dir else None

    def write(self, record: dict[str, Any]) -> None:
        """Record what the run is about to disturb (replacing what it recorded before), with when."""
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            written = {**record, "written_at": datetime.now(UTC).isoformat()}
            # Written whole then renamed: a kill mid-write leaves the previous record, never half of one.
            partial = self.path.with_suffix(".partial")
            partial.write_text(json.dumps(written))
            partial.replace(self.path)

    def read(self, run_id: str) -> dict[str, Any]:
        """What run ``run_id`` recorded; empty when nothing is recorded, or the record is another run's."""
        if self.path is None or not self.path.exists():
            return {}
        record = json.loads(self.path.read_text())
        return record if record.get("run") in (None, "", run_id) else {}

    def read_written_since(self, since: datetime | None) -> dict[str, Any]:
        """The record of any run, if written at or after ``since`` (a subflow's, killed with its parent)."""
        if self.path is None or not self.path.exists() or since is None:
            return {}
        record = json.loads(self.path.read_text())
        written = record.get("written_at")
        return record if written and datetime.fromisoformat(written) >= since else {}

    def clear(self) -> None:
        """The run ended: nothing is left to undo."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def undo_on_cancel(runbook: str, title: str, undo: Undo) -> Callable[[Any, Any, Any], None]:
    """A flow hook (on_cancellation) that frees the cancelled run's locks and undoes what its journal names.

    It runs in the runner's process after the run's process was killed, and says in one
    Slack alert (``title``, e.g. "DR drill cancelled") what it released and undid.
    """

    def hook(flow: Any, flow_run: Any, state: Any) -> None:
        params = (flow_run.parameters or {}).get("params") or {}
        topology = topology_from_parameters(flow_run.parameters or {})
        if topology is None:
            log.warning("cannot undo cancelled %s run %s: topology not loadable", runbook, flow_run.name)
            return
        try:
            cluster, _ = topology.cluster(params.get("cluster"))
        except Exception:  # noqa: BLE001 - no cluster to undo anything on
            return
        # Undo first, still holding the run's locks: no other runbook (an alert's failover) may
        # act on the cluster while the rescue decides from what it observed.
        journal = RunJournal(topology, runbook, cluster)
        try:
            undone = undo(topology, cluster, journal.read(str(flow_run.id)))
            journal.clear()
        except Exception as exc:  # noqa: BLE001 - the locks go and the failure is said either way
            log.exception("undoing cancelled %s run %s failed", runbook, flow_run.name)
            undone = [f"undoing failed, look at the cluster now: {type(exc).__name__}: {exc}"]
        finally:
            released = release_run_leases(str(flow_run.id))
        lines = [f"released {released} lock(s) the cancelled {runbook} held", *undone]
        notifier_for(topology).alert(f"{title}: {cluster} made safe", lines, topology.prefect.run_link(flow_run.id))

    return hook
