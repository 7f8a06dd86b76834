"""One runbook at a time changes a cluster: a Prefect global concurrency limit of 1 per cluster.

The lock is a lease on the Prefect server, so it holds across processes and machines,
and a crashed holder's lease expires on its own (``LEASE_SECONDS``) instead of wedging
the cluster forever; a cancelled run's locks are released at once by its cancellation
hook (:func:`release_run_leases`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.exceptions import ObjectAlreadyExists, PrefectHTTPStatusError
from prefect.runtime import flow_run
from prefect.variables import Variable

from regionops.errors import DeadlineExceeded, PreconditionFailed
from regionops.waiting import poll_until

log = logging.getLogger(__name__)

LEASE_SECONDS = 300
# A backup killed without a hook (kill -9 of a CLI run) holds up the next one only until
# its lease expires: the server's shortest lease (60 s), as two backups overlapping after
# a long renewal blip only cost time, never data.
BACKUP_LEASE_SECONDS = 60
MIN_LOCK_WAIT_SECONDS = 5


def lock_name(cluster: str) -> str:
    """The concurrency limit guarding changes to ``cluster``."""
    return f"regionops-cluster-{cluster}"


def ensure_cluster_lock(cluster: str) -> str:
    """Create the cluster's limit (limit 1) on the Prefect server if it does not exist."""
    return ensure_limit(lock_name(cluster))


def ensure_limit(name: str) -> str:
    """Create global concurrency limit ``name`` (limit 1) on the Prefect server if it does not exist."""
    with get_client(sync_client=True) as client:
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        except ObjectAlreadyExists:
            pass
    return name


@contextmanager
def cluster_lock(cluster: str, runbook: str, wait_seconds: float = 0) -> Iterator[None]:
    """Hold ``cluster``'s change lock for the block.

    Raises PreconditionFailed (nothing changed) when another runbook holds it for longer
    than ``wait_seconds``.
    """
    with held_lock(ensure_cluster_lock(cluster), wait_seconds, what=f"{runbook} refused: another runbook is "
                   f"changing cluster {cluster}"):
        yield


@contextmanager
def drill_lock(cluster: str, wait_seconds: float = 0) -> Iterator[None]:
    """One DR drill per cluster at a time (the runbooks it starts take the cluster lock themselves)."""
    with held_lock(ensure_limit(f"regionops-drill-{cluster}"), wait_seconds,
                   what=f"dr-drill refused: another drill of cluster {cluster} is running"):
        yield


@contextmanager
def backup_lock(cluster: str, wait_seconds: float = 0) -> Iterator[None]:
    """One backup of ``cluster`` at a time.

    Not the change lock: a backup may run for hours, and a failover must never wait
    for one (a backup whose source node goes away fails and is retried next time).
    """
    with held_lock(ensure_limit(f"regionops-backup-{cluster}"), wait_seconds,
                   what=f"backup refused: another backup of cluster {cluster} is running",
                   lease_seconds=BACKUP_LEASE_SECONDS):
        yield


@contextmanager
def held_lock(name: str, wait_seconds: float, what: str, lease_seconds: float = LEASE_SECONDS) -> Iterator[None]:
    """Hold limit ``name`` for the block; PreconditionFailed starting with ``what`` when it stays taken.

    The slot is a lease on the Prefect server, renewed in the background.  Its id is
    recorded in a Prefect variable under the run's root flow run, so that when a run is
    cancelled (its process killed), :func:`release_run_leases` frees the locks it held
    at once instead of leaving the cluster locked until the lease expires.
    """
    # Even "no wait" allows a few seconds: taking a free lock is an HTTP round trip to the
    # Prefect server, and a busy server must not read as "another runbook holds it".
    try:
        lease_id = poll_until(lambda: _try_acquire(name, lease_seconds),
                              timeout=max(wait_seconds, MIN_LOCK_WAIT_SECONDS), interval=0.5, what=f"lock {name}")
    except DeadlineExceeded as exc:
        raise PreconditionFailed(f"{what} (lock {name} is held); nothing was changed") from exc
    _remember_lease(lease_id)
    stop = threading.Event()
    renewer = threading.Thread(target=_renew_until, args=(lease_id, stop, lease_seconds), name=f"lease-{name}",
                               daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join(5)
        _release(lease_id)
        _forget_lease(lease_id)


def _try_acquire(name: str, lease_seconds: float) -> str | None:
    with get_client(sync_client=True) as client:
        try:
            resp = client.increment_concurrency_slots_with_lease(names=[name], slots=1, mode="concurrency",
                                                                  lease_duration=lease_seconds)
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code == 423:  # Locked: every slot is taken
                return None
            raise
    return str(resp.json()["lease_id"])


def _renew_until(lease_id: str, stop: threading.Event, lease_seconds: float) -> None:
    # A failed renewal must not kill a runbook half-way (fenced, not yet promoted): finishing
    # the change is safer than stopping it, and the lease outlives a short blip.
    while not stop.wait(lease_seconds / 4):
        try:
            with get_client(sync_client=True) as client:
                client.renew_concurrency_lease(lease_id, lease_seconds)
        except Exception as exc:  # noqa: BLE001 - logged, retried at the next interval
            log.warning("could not renew lease %s: %s", lease_id, exc)


def _release(lease_id: str) -> None:
    try:
        with get_client(sync_client=True) as client:
            client.release_concurrency_slots_with_lease(lease_id)
    except Exception as exc:  # noqa: BLE001 - the lease expires on its own
        log.warning("could not release lease %s (it expires within %s s): %s", lease_id, LEASE_SECONDS, exc)


def _variable_name(root_run_id: str) -> str:
    return f"regionops-leases-{root_run_id}"


def _root_run_id() -> str | None:
    if not flow_run.get_id():
        return None
    return str(flow_run.get_root_flow_run_id())


def _remember_lease(lease_id: str) -> None:
    root = _root_run_id()
    if root is None:
        return
    name = _variable_name(root)
    held = Variable.get(name, default=[]) or []
    Variable.set(name, [*held, lease_id], overwrite=True)


def _forget_lease(lease_id: str) -> None:
    root = _root_run_id()
    if root is None:
        return
    name = _variable_name(root)
    held = [x for x in (Variable.get(name, default=[]) or []) if x != lease_id]
    if held:
        Variable.set(name, held, overwrite=True)
    else:
        Variable.unset(name)


def release_run_leases(root_run_id: str) -> int:
    """Release every lock a run (and its subflows) still held; for a cancelled or crashed run.  Returns how many."""
    name = _variable_name(root_run_id)
    held = Variable.get(name, default=[]) or []
    for lease_id in held:
        _release(lease_id)
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


def release_lock_name(application: str) -> str:
    """The concurrency limit allowing one release of ``application`` at a time."""
    return f"regionops-release-{application}"


def _held(name: str) -> bool:
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name).active_slots > 0


@contextmanager
def release_lock(application: str, wait_seconds: float = 0,
                 on_queue: Callable[[str], None] | None = None) -> Iterator[None]:
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
