"""Who holds a lock, and whether it has changed anything yet: records beside the Prefect lease.

A Prefect concurrency lease says only that *someone* holds a slot.  The rules of the
cluster lock need more (:mod:`regionops.runbook.locks`): a failover may take the lock
from a run that has changed nothing yet, a subflow of the holder's own run nests inside
it, a drill hands it to the failover its alert starts.  So every holder keeps, in
Prefect variables:

- ``regionops-lockholder-<lock>``: the lease id of the current holder (written by the
  holder right after it acquired the lease, removed before it releases it);
- ``regionops-lease-<lease id>``: that lease's :class:`LockHolder` record, written only
  by its holder (its run, whether it changed anything, whom it yields to);
- ``regionops-preempted-<lease id>``: written by the failover that took the lease away,
  so the holder can say who did when it notices.

Writes are ordered so that a preemption is safe without compare-and-set: the holder
writes ``changed`` *before* it confirms that its lease is still valid; the preemptor
revokes the lease and *then* reads ``changed`` again.  Whichever comes first, the other
one sees it (see :func:`regionops.runbook.locks.held_lock`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect.variables import Variable
from pydantic import BaseModel


class LockHolder(BaseModel):
    """One holder of one lock."""

    lock: str
    lease_id: str
    runbook: str
    run_id: str | None = None
    root_run_id: str | None = None
    run_name: str | None = None
    run_url: str | None = None
    since: datetime
    changed: bool = False  # has the holder changed anything yet (first change announced)
    yields_to: list[str] = []  # runbooks that may take the lock over even once it changed things

    def sentence(self) -> str:
        """``switchover run brave-fox (since 21:03:10 UTC, has changed nothing yet)``."""
        run = f"{self.runbook} run {self.run_name or self.run_id or '(outside Prefect)'}"
        state = "has changed the cluster" if self.changed else "has changed nothing yet"
        return f"{run} (since {self.since:%H:%M:%S} UTC, {state})"


class Preemption(BaseModel):
    """Which run took a lease away from its holder, and why."""

    by_runbook: str
    by_run: str | None = None
    at: datetime
    reason: str

    def sentence(self) -> str:
        """``failover run calm-owl took the cluster lock at 21:04:02 UTC: ...``."""
        return f"{self.by_runbook} run {self.by_run or '?'} took the lock at {self.at:%H:%M:%S} UTC: {self.reason}"


def _pointer(lock: str) -> str:
    return f"regionops-lockholder-{lock}"


def _record(lease_id: str) -> str:
    return f"regionops-lease-{lease_id}"


def _preempted(lease_id: str) -> str:
    return f"regionops-preempted-{lease_id}"


def write_holder(holder: LockHolder, *, point: bool = False) -> None:
    """Store ``holder``'s record; with ``point``, also make it the lock's current holder."""
    Variable.set(_record(holder.lease_id), holder.model_dump(mode="json"), overwrite=True)
    if point:
        Variable.set(_pointer(holder.lock), holder.lease_id, overwrite=True)


def read_holder_record(lease_id: str) -> LockHolder | None:
    """The record of one lease (None when there is none)."""
    doc = Variable.get(_record(lease_id), default=None)
    return LockHolder.model_validate(doc) if doc else None


def current_holder(lock: str) -> LockHolder | None:
    """The record of the lock's current holder, as it last wrote it (None when unknown)."""
    lease_id = Variable.get(_pointer(lock), default=None)
    return read_holder_record(str(lease_id)) if lease_id else None


def forget_holder(lock: str, lease_id: str) -> None:
    """Remove a released lease's records (and the lock's pointer, when it still points at it)."""
    if Variable.get(_pointer(lock), default=None) == lease_id:
        Variable.unset(_pointer(lock))
    Variable.unset(_record(lease_id))
    Variable.unset(_preempted(lease_id))


def record_preemption(lease_id: str, preemption: Preemption) -> None:
    """Tell the holder of ``lease_id`` who took its lease away."""
    Variable.set(_preempted(lease_id), preemption.model_dump(mode="json"), overwrite=True)


def read_preemption(lease_id: str) -> Preemption | None:
    """Who took ``lease_id`` away, if anyone said so."""
    doc = Variable.get(_preempted(lease_id), default=None)
    return Preemption.model_validate(doc) if doc else None


def now() -> datetime:
    """The time records carry (UTC)."""
    return datetime.now(UTC)
