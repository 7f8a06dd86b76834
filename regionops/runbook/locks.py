"""One runbook at a time changes a cluster: a Prefect global concurrency limit of 1 per cluster.

The lock is a lease on the Prefect server, so it holds across processes and machines,
and a crashed holder's lease expires on its own (``LEASE_SECONDS``) instead of wedging
the cluster forever; a cancelled run's locks are released at once by its cancellation
hook (:func:`regionops.runbook.run_leases.release_run_leases`).

The rules of the cluster lock, in order (who holds it: :mod:`regionops.runbook.lock_holders`):

1. A subflow of the run that holds the lock shares it (a DR drill's failover, resync
   and switchover run inside the drill's lock).
2. A failover goes first: a holder that has **changed nothing yet** (a switchover paused
   for approval, a run still checking) loses the lock to it at once, and stops with "nothing
   was changed" at its first change (:meth:`HeldLock.mark_changed`).  A holder that yields
   to the failover (a drill whose alert starts it) loses it too.
3. Otherwise the newcomer waits up to its ``lock_wait_seconds`` (saying whom it waits for),
   then refuses, changing nothing.  A primary-down alert's failover waits long (its
   trigger sets it), and pages when it does not fail over (flows/failover.py).
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from typing import Any
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.exceptions import ObjectAlreadyExists, PrefectHTTPStatusError
from prefect.runtime import flow_run
from prefect.settings import PREFECT_API_URL, temporary_settings

from regionops.errors import DeadlineExceeded, PreconditionFailed
from regionops.model.locks import backup_lock_name, drill_lock_name, lock_name, release_lock_name
from regionops.runbook.lock_holders import (
    LockHolder,
    Preemption,
    current_holder,
    now,
    read_holder_record,
    read_preemption,
    record_preemption,
    write_holder,
)
from regionops.runbook.run_leases import (
    forget_holder_record,
    forget_lease,
    release_lease,
    remember_lease,
    root_run_id,
)
from regionops.waiting import poll_until

log = logging.getLogger(__name__)

LEASE_SECONDS = 300
# A backup killed without a hook (kill -9 of a CLI run) holds up the next one only until
# its lease expires: the server's shortest lease (60 s), as two backups overlapping after
# a long renewal blip only cost time, never data.
BACKUP_LEASE_SECONDS = 60
MIN_LOCK_WAIT_SECONDS = 5


def ensure_cluster_lock(cluster: str) -> str:
    """Create the cluster's limit (limit 1) on the Prefect server if it does not exist."""
    return ensure_limit(lock_name(cluster))


# (API URL, limit name) of limits this process created or found: a limit is never deleted by
# regionops, so it is created once per process, not at every lock (~30-60 ms each).  A lock
# taken on a limit that went away anyway is caught by _try_acquire and the limit made again.
_known_limits: set[tuple[str, str]] = set()


def ensure_limit(name: str) -> str:
    """Create global concurrency limit ``name`` (limit 1) on the Prefect server if it does not exist."""
    key = (str(PREFECT_API_URL.value()), name)
    if key in _known_limits:
        return name
    with get_client(sync_client=True) as client:
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        except ObjectAlreadyExists:
            pass
    _known_limits.add(key)
    return name


@contextmanager
def cluster_lock(
    cluster: str,
    runbook: str,
    wait_seconds: float = 0,
    *,
    preempt: bool = False,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[HeldLock]:
    """Hold ``cluster``'s change lock for the block; yields the :class:`HeldLock`.

    Raises PreconditionFailed (nothing changed) when another runbook holds it for longer
    than ``wait_seconds``.  Inside a run that already holds it (a drill's recovery
    subflows), the lock is shared, not taken twice.  ``preempt`` (the failover): a holder
    that has changed nothing yet, or that yields to this runbook, loses the lock at once
    (:func:`held_lock`); a holder that has changed the cluster is waited for.
    """
    with held_lock(
        ensure_cluster_lock(cluster),
        wait_seconds,
        what=f"{runbook} refused: another runbook is changing cluster {cluster}",
        runbook=runbook,
        preempt=preempt,
        on_wait=on_wait,
    ) as held:
        yield held


@contextmanager
def drill_lock(cluster: str, wait_seconds: float = 0) -> Iterator[HeldLock]:
    """One DR drill per cluster at a time (it takes the cluster's change lock too, see flows/dr_drill.py)."""
    with held_lock(
        ensure_limit(drill_lock_name(cluster)),
        wait_seconds,
        what=f"dr-drill refused: another drill of cluster {cluster} is running",
        runbook="dr-drill",
    ) as held:
        yield held


@contextmanager
def backup_lock(cluster: str, wait_seconds: float = 0) -> Iterator[HeldLock]:
    """One backup of ``cluster`` at a time.

    Not the change lock: a backup may run for hours, and a failover must never wait
    for one (a backup whose source node goes away fails and is retried next time).
    """
    with held_lock(
        ensure_limit(backup_lock_name(cluster)),
        wait_seconds,
        what=f"backup refused: another backup of cluster {cluster} is running",
        lease_seconds=BACKUP_LEASE_SECONDS,
        runbook="backup",
    ) as held:
        yield held


class LockLost(PreconditionFailed):
    """The run's lock was taken over (or its lease expired) before the run changed anything."""


class HeldLock:
    """A lock this run holds (or shares with its root run, ``nested``)."""

    def __init__(self, holder: LockHolder, lease_seconds: float, *, nested: bool):
        self.holder = holder
        self.lease_seconds = lease_seconds
        self.nested = nested

    @property
    def name(self) -> str:
        return self.holder.lock

    def mark_changed(self) -> None:
        """Say that the run is about to make its first change; LockLost when the lock is no longer ours.

        The record is written *before* the lease is confirmed: a failover that revoked the
        lease after that confirmation reads ``changed`` and waits instead of acting.
        """
        if not self.holder.changed:
            self.holder = self.holder.model_copy(update={"changed": True})
            write_holder(self.holder)
        self.confirm()

    def confirm(self) -> None:
        """LockLost unless the lease is still valid (renewing it)."""
        try:
            with get_client(sync_client=True) as client:
                client.renew_concurrency_lease(UUID(self.holder.lease_id), self.lease_seconds)
            return
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code not in (404, 410):
                raise
        taken = read_preemption(self.holder.lease_id)
        why = taken.sentence() if taken else f"its lease expired (lock {self.name})"
        raise LockLost(f"{self.holder.runbook} stopped before changing anything: {why}; nothing was changed")

    def yield_to(self, *runbooks: str) -> None:
        """From now on, ``runbooks`` may take this lock over even though the run changed things (a drill's
        alert path hands the cluster to the failover its alert starts)."""
        self.holder = self.holder.model_copy(update={"yields_to": sorted({*self.holder.yields_to, *runbooks})})
        write_holder(self.holder)


def _me(lock: str, lease_id: str, runbook: str) -> LockHolder:
    run_id = flow_run.get_id()
    return LockHolder(
        lock=lock,
        lease_id=lease_id,
        runbook=runbook,
        run_id=str(run_id) if run_id else None,
        root_run_id=root_run_id(),
        run_name=flow_run.get_name(),
        since=now(),
    )


# The locks held by the runs enclosing this code in this process (a drill's, while its subflows
# run inline in its thread): a subflow shares them without asking the API who holds them.
# Set and reset by held_lock around its block, so it never outlives the holder's block.
_HELD_HERE: contextvars.ContextVar[dict[str, HeldLock]] = contextvars.ContextVar("regionops_held_locks")


def _shared_with_root(name: str, lease_seconds: float) -> HeldLock | None:
    """The lock held by this run's root run (a subflow shares it), if it is and the lease is valid.

    Held by an enclosing run in this process: shared at once (the subflow's first change
    confirms the lease, as any run's does).  Else the holder record says whether the root
    run holds it, and the lease is confirmed now.
    """
    enclosing = _HELD_HERE.get({}).get(name)
    me = flow_run.get_id()
    if enclosing is not None and enclosing.holder.run_id not in (None, str(me)) and me:
        # Taken by another flow run whose block encloses this flow run: this one is its subflow.
        # (Not a lock taken outside any flow run, by a script or a test; nor the run's own lock,
        # which it asks the API about: a failover may have taken it over, see take_back.)
        return HeldLock(enclosing.holder, lease_seconds, nested=True)
    root = root_run_id()
    if root is None:
        return None
    holder = current_holder(name)
    if holder is None or holder.root_run_id != root:
        return None
    shared = HeldLock(holder, lease_seconds, nested=True)
    try:
        shared.confirm()
    except LockLost:
        return None
    return shared


def _may_preempt(holder: LockHolder, runbook: str) -> bool:
    """A failover goes first: it takes the lock from a run that changed nothing yet (and is no failover
    itself), or from one that yields to it."""
    return runbook in holder.yields_to or (not holder.changed and holder.runbook != runbook)


def _preempt(name: str, holder: LockHolder, runbook: str) -> bool:
    """Revoke ``holder``'s lease for ``runbook``; True when the holder cannot have started changing things."""
    record_preemption(
        holder.lease_id,
        Preemption(
            by_runbook=runbook,
            by_run=flow_run.get_name(),
            at=now(),
            reason=(
                f"it yields to {runbook}"
                if runbook in holder.yields_to
                else f"a {runbook} goes first, and {holder.runbook} had changed nothing yet"
            ),
        ),
    )
    release_lease(holder.lease_id)
    # Read again *after* the revocation: a holder that announced its first change before it
    # noticed may be acting now, without a lease; then it must be waited for, not overtaken.
    after = read_holder_record(holder.lease_id) or holder
    return _may_preempt(after, runbook)


@contextmanager
def held_lock(
    name: str,
    wait_seconds: float,
    what: str,
    lease_seconds: float = LEASE_SECONDS,
    *,
    runbook: str = "runbook",
    preempt: bool = False,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[HeldLock]:
    """Hold limit ``name`` for the block; PreconditionFailed starting with ``what`` when it stays taken.

    The slot is a lease on the Prefect server, renewed in the background.  Its id is
    recorded in a Prefect variable under the run's root flow run, so that when a run is
    cancelled (its process killed), :func:`regionops.runbook.run_leases.release_run_leases` frees the locks it held
    at once instead of leaving the cluster locked until the lease expires.  Who holds
    it is recorded beside it (:mod:`regionops.runbook.lock_holders`): a subflow of the
    holder's run shares the lock; with ``preempt`` a holder that may be overtaken
    (:func:`_may_preempt`) loses it; ``on_wait`` hears once per holder that we wait.
    """
    shared = _shared_with_root(name, lease_seconds)
    if shared is not None:
        yield shared
        return
    told: set[str] = set()
    waiting_on: list[LockHolder] = []

    def attempt() -> str | None:
        lease = _try_acquire(name, lease_seconds)
        if lease is not None:
            return lease
        holder = current_holder(name)
        if holder is None:
            return None
        if preempt and _may_preempt(holder, runbook):
            if _preempt(name, holder, runbook):
                if on_wait:
                    on_wait(f"took lock {name} from {holder.sentence()}: it stops before its first change")
                return _try_acquire(name, lease_seconds)
        waiting_on[:] = [holder]
        if on_wait and holder.lease_id not in told and wait_seconds > 0:
            told.add(holder.lease_id)
            on_wait(f"waiting up to {wait_seconds:g} s for lock {name}, held by {holder.sentence()}")
        return None

    # Even "no wait" allows a few seconds: taking a free lock is an HTTP round trip to the
    # Prefect server, and a busy server must not read as "another runbook holds it".
    try:
        lease_id = poll_until(
            attempt, timeout=max(wait_seconds, MIN_LOCK_WAIT_SECONDS), interval=0.5, what=f"lock {name}"
        )
    except DeadlineExceeded as exc:
        by = f", by {waiting_on[0].sentence()}" if waiting_on else ""
        raise PreconditionFailed(f"{what} (lock {name} is held{by}); nothing was changed") from exc
    held = HeldLock(_me(name, lease_id, runbook), lease_seconds, nested=False)
    # Who holds it, and the run's record of its leases (for its cancel hook): independent writes.
    try:
        _side_by_side(
            partial(write_holder, held.holder, point=True), partial(remember_lease, lease_id), raise_first=True
        )
    except Exception:
        release_lease(lease_id)  # not recorded, so no hook could free it: free it now
        raise
    stop = threading.Event()
    renewer = threading.Thread(
        target=_renew_until,
        args=(lease_id, stop, lease_seconds, PREFECT_API_URL.value()),
        name=f"lease-{name}",
        daemon=True,
    )
    renewer.start()
    here = _HELD_HERE.set({**_HELD_HERE.get({}), name: held})
    try:
        yield held
    finally:
        try:
            _HELD_HERE.reset(here)
        except ValueError:  # left in another context than it was entered in: drop just this lock
            _HELD_HERE.set({k: v for k, v in _HELD_HERE.get({}).items() if k != name})
        stop.set()
        # Freeing the slot, removing the holder record and the run's lease record are independent
        # calls (about ten round trips in all): side by side.
        for failure in _side_by_side(
            partial(release_lease, lease_id),
            partial(forget_holder_record, name, lease_id),
            partial(forget_lease, lease_id),
        ):
            log.warning("releasing lock %s: %s", name, failure)  # a stale record of a released lease only
        renewer.join(5)


def _side_by_side(*jobs: Callable[[], Any], raise_first: bool = False) -> list[BaseException]:
    """Run independent API calls at once, each in a copy of the run's context; their exceptions.

    ``raise_first``: raise the first exception instead of returning it.
    """
    with ThreadPoolExecutor(len(jobs), thread_name_prefix="lock-io") as pool:
        futures = [pool.submit(contextvars.copy_context().run, job) for job in jobs]
    failures = [exc for f in futures if (exc := f.exception()) is not None]
    if failures and raise_first:
        raise failures[0]
    return failures


def _try_acquire(name: str, lease_seconds: float, *, again: bool = True) -> str | None:
    with get_client(sync_client=True) as client:
        try:
            resp = client.increment_concurrency_slots_with_lease(
                names=[name], slots=1, mode="concurrency", lease_duration=lease_seconds
            )
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code == 423:  # Locked: every slot is taken
                return None
            raise
    body = resp.json()
    lease_id = str(body["lease_id"])
    if not any(limit.get("name") == name for limit in body.get("limits", [])):
        # The server grants a lease on a limit that does not exist (it holds nothing): make the
        # limit, then take the lock for real.
        release_lease(lease_id)
        if not again:
            raise RuntimeError(f"the Prefect server has no concurrency limit {name} even after creating it")
        _known_limits.discard((str(PREFECT_API_URL.value()), name))
        ensure_limit(name)
        return _try_acquire(name, lease_seconds, again=False)
    return lease_id


def _renew_until(lease_id: str, stop: threading.Event, lease_seconds: float, api_url: str | None) -> None:
    # A failed renewal must not kill a runbook half-way (fenced, not yet promoted): finishing
    # the change is safer than stopping it, and the lease outlives a short blip.  The thread
    # renews against the server the run took the lease from (a bare thread does not see
    # the run's settings context), with a client of its own.
    with temporary_settings(updates={PREFECT_API_URL: api_url} if api_url else {}):
        while not stop.wait(lease_seconds / 4):
            try:
                with get_client(sync_client=True) as client:
                    client.renew_concurrency_lease(UUID(lease_id), lease_seconds)
            except Exception as exc:  # noqa: BLE001 - logged, retried at the next interval
                log.warning("could not renew lease %s: %s", lease_id, exc)


def _held(name: str) -> bool:
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name).active_slots > 0


@contextmanager
def release_lock(
    application: str, wait_seconds: float = 0, on_queue: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold ``application``'s release lock for the block (one release at a time).

    A second release is refused at once (``wait_seconds`` 0) or queued behind the running
    one for up to ``wait_seconds``, and ``on_queue`` is told so the queueing is visible.
    Raises PreconditionFailed (nothing changed) when the lock is not obtained.
    """
    name = ensure_limit(release_lock_name(application))
    what = f"release refused: another release of {application} is running"
    if _held(name):
        if wait_seconds <= 0:
            raise PreconditionFailed(f"{what} (lock {name} is held); nothing was changed")
        if on_queue:
            on_queue(f"queued: another release of {application} is running; waiting up to {wait_seconds:g} s for it")
    with held_lock(name, wait_seconds, what):
        yield
