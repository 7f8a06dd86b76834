"""Which leases a run holds, recorded under its root flow run, so a killed run's locks are freed at once.

A cancelled run's process is killed: its ``finally`` never releases its leases.  Each
lease a run (or one of its subflows) takes is recorded in a Prefect variable named after
the run's root flow run; the run's cancel or crash hook (:func:`release_leases_hook`,
:func:`regionops.runbook.journal.undo_on_cancel`) releases every lease recorded there
instead of leaving the cluster locked until the leases expire.
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from uuid import UUID

from prefect import get_client
from prefect.runtime import flow_run
from prefect.variables import Variable

from regionops.runbook.lock_holders import forget_holder, read_holder_record

log = logging.getLogger(__name__)

# A run's lease records are read, changed and written back: two locks released side by side in
# one process (a drill's) must not lose each other's change.
_records = threading.Lock()


def forget_holder_record(name: str, lease_id: str) -> None:
    """Remove the record of who holds lock ``name`` under ``lease_id`` (a failure is logged)."""
    try:
        forget_holder(name, lease_id)
    except Exception as exc:  # noqa: BLE001 - a stale record is overwritten by the next holder
        log.warning("could not remove the holder record of lock %s: %s", name, exc)


def release_lease(lease_id: str) -> None:
    """Free the slot a lease holds on the Prefect server (a failure is logged: the lease expires)."""
    try:
        with get_client(sync_client=True) as client:
            client.release_concurrency_slots_with_lease(UUID(lease_id))
    except Exception as exc:  # noqa: BLE001 - the lease expires on its own
        log.warning("could not release lease %s (it expires on its own): %s", lease_id, exc)


def _variable_name(root_run_id: str) -> str:
    return f"regionops-leases-{root_run_id}"


# flow run id -> its root flow run's id.  A subflow's root is found by walking its parents through
# the API (two reads per level, each on a new client: ~0.1-0.2 s), and a run asks for it at each
# lock it shares, takes or releases; a run's root never changes, so it is asked once per process.
_roots: dict[str, str] = {}


def root_run_id() -> str | None:
    """The id of the current flow run's root flow run (None outside a flow run)."""
    run_id = flow_run.get_id()
    if not run_id:
        return None
    root = _roots.get(run_id)
    if root is None:
        root = _roots[run_id] = str(flow_run.get_root_flow_run_id())
    return root


def _leases(name: str) -> list[str]:
    """The lease ids recorded in variable ``name`` (none when it does not exist)."""
    recorded: list[Any] = Variable.get(name, default=[]) or []
    return [str(x) for x in recorded]


def remember_lease(lease_id: str) -> None:
    """Record a lease the run just took under its root run, for its cancel or crash hook."""
    root = root_run_id()
    if root is None:
        return
    name = _variable_name(root)
    with _records:
        held = _leases(name)
        Variable.set(name, [*held, lease_id], overwrite=True)


def forget_lease(lease_id: str) -> None:
    """The run released a lease: remove it from the run's record."""
    root = root_run_id()
    if root is None:
        return
    name = _variable_name(root)
    with _records:
        held = [x for x in _leases(name) if x != lease_id]
        if held:
            Variable.set(name, held, overwrite=True)
        else:
            Variable.unset(name)


def release_run_leases(root_run_id: str) -> int:
    """Release every lock a run (and its subflows) still held; for a cancelled or crashed run.  Returns how many."""
    name = _variable_name(root_run_id)
    held = _leases(name)
    for lease_id in held:
        record = read_holder_record(lease_id)
        if record is not None:
            forget_holder_record(record.lock, lease_id)
        release_lease(lease_id)
    if held:
        Variable.unset(name)
    return len(held)


def release_leases_hook(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow state hook (on_cancellation, on_crashed): free the locks the run held at once.

    A cancelled run's process is killed, so its ``finally`` never releases its leases;
    without this hook the cluster stays locked until they expire (``LEASE_SECONDS``).
    """
    try:
        released = release_run_leases(str(flow_run.id))
    except Exception as exc:  # noqa: BLE001 - the leases expire on their own
        log.warning("could not release the locks of %s run %s: %s", flow.name, flow_run.name, exc)
        return
    if released:
        log.warning("released %d lock(s) held by %s run %s (%s)", released, flow.name, flow_run.name, state.name)
