"""One run of a runbook: lock, journal, progress, approval, errors and the report.

::

    run = RunbookRun(topology, "switchover", cluster, f"Switchover of {cluster}", params)
    with run:                      # Slack thread opened, the runbook's lock taken (not for a dry run)
        ...                        # run.reporter.step(...), raise run.refuse(...)
        run.approve(plan, phrase)  # when params.require_approval
        run.remember(...)          # what a cancel must undo (runbooks that disturb on purpose)
        run.changed = True         # the first change: refused if a failover took the lock meanwhile;
                                   # from here on, a failure reads "failed", not "refused"
    # leaving with an error: the report says refused / rejected / failed; the lock is released

Every runbook opens one, read-only ones with ``lock="none"``.  The flow decorator of a
changing runbook takes :data:`CHANGE_HOOKS`, so a crashed or cancelled run reports
itself and releases its locks at once instead of when their leases expire.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from types import TracebackType
from typing import Any, Literal, TypedDict

from prefect.runtime import flow_run as current_run
from pydantic import BaseModel

from regionops.errors import PreconditionFailed
from regionops.runbook import prefect_engine
from regionops.runbook.approval import Approval, request_approval
from regionops.runbook.common import refuse, report_error
from regionops.runbook.journal import RunJournal
from regionops.runbook.locks import (
    HeldLock,
    LockLost,
    backup_lock,
    cluster_lock,
    drill_lock,
    release_lock,
)
from regionops.runbook.reporting import RunReporter, report_failure
from regionops.runbook.run_leases import release_leases_hook
from regionops.topology import Topology

prefect_engine.install()  # a run's end does not wait on its heartbeat thread (prefect_engine says why)


class FlowHooks(TypedDict, total=False):
    """Flow state hooks, as ``@flow(name=..., **HOOKS)`` takes them (typed per keyword)."""

    on_failure: list[Any]
    on_crashed: list[Any]
    on_cancellation: list[Any]


# Flow state hooks of every changing runbook: @flow(name=..., **CHANGE_HOOKS).
CHANGE_HOOKS: FlowHooks = {
    "on_failure": [report_failure],
    "on_crashed": [release_leases_hook, report_failure],
    "on_cancellation": [release_leases_hook, report_failure],
}
# Flow state hooks of a read-only runbook: it holds no lock, it only reports.
REPORT_HOOKS: FlowHooks = {"on_failure": [report_failure], "on_crashed": [report_failure]}

# change: the cluster's change lock (one changing runbook at a time; a failover goes first);
# backup: one backup of the cluster at a time (never holding up a failover);
# release: one release of the application at a time (queued visibly while another runs);
# drill: one drill of the cluster at a time, and the change lock;
# none: a read-only runbook.
LockKind = Literal["change", "backup", "release", "drill", "none"]


class RunbookRun:
    """The context of one run: its reporter, its lock, its journal and whether it changed anything yet.

    ``scope`` is what the lock guards: the cluster (the application's name for a
    release).  ``params`` is the runbook's parameter model; ``dry_run``, ``notify``,
    ``lock_wait_seconds`` and ``approval_timeout_seconds`` are read from it where it has them.
    ``on_error`` finishes the report of a runbook with its own words for an error (the
    release's tables); what it leaves unfinished is reported the common way.
    """

    def __init__(
        self,
        topology: Topology,
        runbook: str,
        scope: str,
        title: str,
        params: BaseModel,
        *,
        start_lines: list[str] | None = None,
        lock: LockKind = "change",
        on_error: Callable[[BaseException], None] | None = None,
    ):
        self.topology = topology
        self.runbook = runbook
        self.cluster = scope
        self.params = params
        self.dry_run = bool(getattr(params, "dry_run", False))
        self.reporter = RunReporter(topology, runbook, title, slack=bool(getattr(params, "notify", True)))
        self.reporter.defer_artifacts = True  # written while the run winds down, waited for at its end
        self._changed = False
        self.held: HeldLock | None = None
        self.approval: Approval | None = None
        self.journal = RunJournal(topology, runbook, scope)
        self._journaled = False
        self._start_lines = start_lines or []
        self._lock: LockKind = "none" if self.dry_run else lock  # a dry run changes nothing: it needs no lock
        self._wait = float(getattr(params, "lock_wait_seconds", 0))
        self._on_error = on_error
        self._stack = ExitStack()

    def __enter__(self) -> RunbookRun:
        self.reporter.start(self._start_lines)
        try:
            self._take_lock()
        except Exception as exc:
            self._stack.close()  # a drill's lock, taken before the change lock was refused
            self._report(exc, changed=False)
            self.reporter.flush_artifacts()
            self.reporter.flush_slack()
            raise
        return self

    def _take_lock(self) -> None:
        on_wait = self.reporter.step
        if self._lock == "change":
            # A failover goes first: it takes the lock from a run that has changed nothing yet.
            preempt = self.runbook == "failover"
            self.held = self.hold(
                cluster_lock(self.cluster, self.runbook, self._wait, preempt=preempt, on_wait=on_wait)
            )
        elif self._lock == "drill":
            # One drill per cluster, and the change lock like any changing runbook: a drill must
            # never inject a fault that no runbook may then repair.
            self.hold(drill_lock(self.cluster))
            self.held = self.hold(cluster_lock(self.cluster, self.runbook, self._wait, on_wait=on_wait))
        elif self._lock == "backup":
            self.held = self.hold(backup_lock(self.cluster, self._wait))
        elif self._lock == "release":
            self.hold(release_lock(self.cluster, self._wait, on_wait))

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if isinstance(exc, Exception):
                self._report(exc, changed=self.changed)
        finally:
            # The run ended (or failed): nothing is left to undo.  Not when it is being killed
            # (a cancellation arrives as a BaseException): its cancel hook reads the journal next.
            if self._journaled and (exc is None or isinstance(exc, Exception)):
                self.journal.clear()
            try:
                self._stack.close()  # the lock goes on success, failure and error alike
            finally:
                self.reporter.flush_artifacts()
                self.reporter.flush_slack()

    def _report(self, exc: BaseException, *, changed: bool) -> None:
        if self._on_error is not None:
            self._on_error(exc)
        report_error(self.reporter, exc, changed=changed)  # skipped when the report is finished already

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

    def remember(self, **record: Any) -> None:
        """Journal what the run is about to disturb, for its cancel hook (:mod:`regionops.runbook.journal`)."""
        locked_at = self.held.holder.since.isoformat() if self.held else None
        self.journal.write({"run": str(current_run.get_id() or ""), "locked_at": locked_at, **record})
        self._journaled = True

    def hand_over(self, *runbooks: str) -> None:
        """Let ``runbooks`` take the lock over although the run changed things (a drill's alert path
        hands the cluster to the failover its alert starts); :meth:`take_back` afterwards."""
        if self.held is not None:
            self.held.yield_to(*runbooks)

    def take_back(self, wait_seconds: float, why: str) -> None:
        """Hold the cluster's lock again after :meth:`hand_over` (a no-op when nobody took it over)."""
        if self.held is None:
            return
        try:
            self.held.confirm()
            return  # nobody took it over
        except LockLost:
            pass
        self.held = self.hold(cluster_lock(self.cluster, self.runbook, wait_seconds, on_wait=self.reporter.step))
        self.held.mark_changed()
        self.reporter.step(f"took the cluster lock back {why} ({self.held.name})")

    def hold(self, context: Any) -> Any:
        """Enter ``context`` (e.g. a planned-work silence) for the rest of the run; returns what it yields."""
        return self._stack.enter_context(context)

    def refuse(self, reason: str) -> PreconditionFailed:
        """Record a refusal and return the error to raise (nothing was changed)."""
        return refuse(self.reporter, reason)

    def approve(self, plan: list[str], phrase: str, *, on_reject: str = "nothing was changed") -> Approval:
        """Pause for the typed approval form; ApprovalRejected when the answer is not ``phrase`` and a name."""
        timeout = int(getattr(self.params, "approval_timeout_seconds", 1800))
        self.approval = request_approval(self.reporter, plan, phrase, timeout, on_reject=on_reject)
        return self.approval
