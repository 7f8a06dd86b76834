"""One runbook at a time changes a cluster: a Prefect global concurrency limit of 1 per cluster.

The lock is a lease on the Prefect server, so it holds across processes and machines,
and a crashed holder's lease expires on its own (``LEASE_SECONDS``) instead of wedging
the cluster forever.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists

from regionops.errors import PreconditionFailed

LEASE_SECONDS = 300
MIN_LOCK_WAIT_SECONDS = 5


def lock_name(cluster: str) -> str:
    """The concurrency limit guarding changes to ``cluster``."""
    return f"regionops-cluster-{cluster}"


def ensure_cluster_lock(cluster: str) -> str:
    """Create the cluster's limit (limit 1) on the Prefect server if it does not exist."""
    name = lock_name(cluster)
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
    name = ensure_cluster_lock(cluster)
    try:
        # A failed lease renewal must not kill a runbook half-way (fenced, not yet promoted):
        # finishing the change is safer than stopping it; the lease outlives a short blip.
        # Even "no wait" allows a few seconds: taking a free lock is an HTTP round trip to
        # the Prefect server, and a busy server must not read as "another runbook holds it".
        with concurrency(name, occupy=1, timeout_seconds=max(wait_seconds, MIN_LOCK_WAIT_SECONDS), strict=True,
                         lease_duration=LEASE_SECONDS, raise_on_lease_renewal_failure=False):
            yield
    except TimeoutError as exc:
        raise PreconditionFailed(
            f"{runbook} refused: another runbook is changing cluster {cluster} (lock {name} is held); "
            "nothing was changed"
        ) from exc


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
    name = release_lock_name(application)
    with get_client(sync_client=True) as client:
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        except ObjectAlreadyExists:
            pass
    busy = _held(name)
    refusal = (f"release refused: another release of {application} is running (lock {name} is held); "
               "nothing was changed")
    if busy and wait_seconds <= 0:
        raise PreconditionFailed(refusal)
    if busy and on_queue:
        on_queue(f"queued: another release of {application} is running; waiting up to {wait_seconds:g} s for it")
    try:
        with concurrency(name, occupy=1, timeout_seconds=max(wait_seconds, MIN_LOCK_WAIT_SECONDS), strict=True,
                         lease_duration=LEASE_SECONDS, raise_on_lease_renewal_failure=False):
            yield
    except TimeoutError as exc:
        raise PreconditionFailed(refusal) from exc
