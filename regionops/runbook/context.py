"""One run of a runbook that changes a cluster: lock, progress, approval, errors and the report.

::

    run = RunbookRun(topology, "switchover", cluster, f"Switchover of {cluster}", params)
    with run:                      # Slack thread opened, cluster lock taken (not for a dry run)
        ...                        # run.reporter.step(...), raise run.refuse(...)
        run.approve(plan, phrase)  # when params.require_approval
        run.changed = True         # the first change: refused if a failover took the lock meanwhile;
                                   # from here on, a failure reads "failed", not "refused"
    # leaving with an error: the report says refused / rejected / failed; the lock is released

The flow decorator takes :data:`CHANGE_HOOKS`, so a crashed or cancelled run reports
itself and releases its locks at once instead of when their leases expire.
"""

from __future__ import annotations

from contextlib import ExitStack
from types import TracebackType
from typing import Any, Literal

from regionops.errors import PreconditionFailed
from regionops.runbook.approval import Approval, request_approval
from regionops.runbook.common import refuse, report_error
from regionops.runbook.locks import HeldLock, backup_lock, cluster_lock, release_leases_hook
from regionops.runbook.params import ClusterChangeParams
from regionops.runbook.reporting import RunReporter, report_failure
from regionops.topology import Topology

# Flow state hooks of every changing runbook: @flow(name=..., **CHANGE_HOOKS).
CHANGE_HOOKS: dict[str, list[Any]] = {
    "on_failure": [report_failure],
    "on_crashed": [release_leases_hook, report_failure],
    "on_cancellation": [release_leases_hook, report_failure],
}


class RunbookRun:
    """The context of one changing run: its reporter, its cluster lock and whether it changed anything yet.

    ``lock`` is the cluster's change lock (one changing runbook at a time), its backup
    lock (one backup at a time, without ever holding up a failover) or none.
    """

    def __init__(
        self,
        topology: Topology,
        runbook: str,
        cluster: str,
        title: str,
        params: ClusterChangeParams,
        *,
        start_lines: list[str] | None = None,
        lock: Literal["change", "backup"] | None = "change",
    ):
        self.topology = topology
        self.runbook = runbook
        self.cluster = cluster
        self.params = params
        self.reporter = RunReporter(topology, runbook, title, slack=params.notify)
        self._changed = False
        self.held: HeldLock | None = None
        self.approval: Approval | None = None
        self._start_lines = start_lines or []
        self._lock = None if params.dry_run else lock  # a dry run changes nothing: it needs no lock
        self._stack = ExitStack()

    def __enter__(self) -> RunbookRun:
        self.reporter.start(self._start_lines)
        try:
            if self._lock == "change":
                # A failover goes first: it takes the lock from a run that has changed nothing yet.
                self.held = self._stack.enter_context(
                    cluster_lock(
                        self.cluster,
                        self.runbook,
                        self.params.lock_wait_seconds,
                        preempt=self.runbook == "failover",
                        on_wait=lambda line: self.reporter.step(line),
                    )
                )
            elif self._lock == "backup":
                self.held = self._stack.enter_context(backup_lock(self.cluster, self.params.lock_wait_seconds))
        except Exception as exc:
            report_error(self.reporter, exc, changed=False)
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if isinstance(exc, Exception):
                report_error(self.reporter, exc, changed=self.changed)
        finally:
            self._stack.close()  # the lock goes on success, failure and error alike

    @property
    def changed(self) -> bool:
        """Whether the run has changed anything yet (a failure then reads "failed", not "refused")."""
        return self._changed

    @changed.setter
    def changed(self, value: bool) -> None:
        # The first change is announced to the lock first: a run whose lock a failover took
        # (while it waited for approval, say) stops here, having changed nothing (LockLost).
        if value and not self._changed and self.held is not None:
            self.held.mark_changed()
        self._changed = value

    def hold(self, context: Any) -> Any:
        """Enter ``context`` (e.g. a planned-work silence) for the rest of the run; returns what it yields."""
        return self._stack.enter_context(context)

    def refuse(self, reason: str) -> PreconditionFailed:
        """Record a refusal and return the error to raise (nothing was changed)."""
        return refuse(self.reporter, reason)

    def approve(self, plan: list[str], phrase: str, *, on_reject: str = "nothing was changed") -> Approval:
        """Pause for the typed approval form; ApprovalRejected when the answer is not ``phrase`` and a name."""
        self.approval = request_approval(
            self.reporter, plan, phrase, self.params.approval_timeout_seconds, on_reject=on_reject
        )
        return self.approval
