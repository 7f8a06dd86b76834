"""What ``lab up`` does with the writer record of a lab that already exists: a pure decision.

The lab's nodes are the truth about which node is primary; the writer record only
says where clients are sent.  After a restart (or any sequence of runbooks) the record
must follow the node that really is primary, and when no node or several nodes are
primary the lab must say so, name the nodes and the runbook that repairs it, and leave
the record alone: the failover and resync runbooks read it to tell which node *was*
primary and which history is the right one.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Literal

from regionops.decisions._common import Decision
from regionops.drivers.postgres import NodeState
from regionops.health import RegionHealthReport

WriterAction = Literal["keep", "point", "leave"]


class WriterReconcile(Decision):
    """Where the writer record should point after ``lab up``, and what to run when the lab cannot say."""

    action: WriterAction  # keep: already right; point: move it to `primary`; leave: no single primary
    primary: str | None
    writer_before: str | None
    reason: str
    advice: str | None = None  # the command(s) to run when the lab is not healthy

    @property
    def healthy(self) -> bool:
        """Exactly one node is primary (the record points, or will point, at it)."""
        return self.primary is not None

    def sentence(self) -> str:
        """One line for ``lab up``'s progress."""
        if self.action == "keep":
            return f"writer record already points at the primary {self.primary}"
        if self.action == "point":
            was = f"it pointed at {self.writer_before}" if self.writer_before else "it was missing"
            return f"writer record now points at the primary {self.primary} ({was})"
        return f"writer record left as it is: {self.reason}" + (f"; run {self.advice}" if self.advice else "")


def _describe(name: str, state: NodeState, fenced: Collection[str]) -> str:
    if name in fenced:
        return f"{name} is fenced (left stopped)"
    if not state.reachable:
        return f"{name} is down"
    if state.role == "primary":
        return f"{name} is primary"
    streaming = bool(state.wal_receiver and state.wal_receiver.status == "streaming")
    return f"{name} is a replica{'' if streaming else ' (not streaming)'}"


def reconcile_writer(
    states: Mapping[str, NodeState], writer_before: str | None, fenced: Collection[str] = ()
) -> WriterReconcile:
    """Decide the writer record from the nodes' observed roles.

    - Exactly one reachable primary: the record points at it (``keep`` or ``point``).
    - None: ``leave``; the failover runbook promotes the best replica (and moves the record).
    - Several: ``leave`` (split brain); the runbooks keep the history of the node the record
      points at, so replica resync rewinds the others when it points at one of them.
    """
    primaries = sorted(n for n, s in states.items() if s.reachable and s.role == "primary")
    nodes = ", ".join(_describe(n, s, fenced) for n, s in states.items())
    if len(primaries) == 1:
        primary = primaries[0]
        action: WriterAction = "keep" if writer_before == primary else "point"
        return WriterReconcile(
            action=action,
            primary=primary,
            writer_before=writer_before,
            reason=f"{primary} is the only primary ({nodes})",
        )
    if not primaries:
        return WriterReconcile(
            action="leave",
            primary=None,
            writer_before=writer_before,
            reason=f"no node is primary ({nodes})",
            advice="`regionops run failover` to promote the most advanced replica, then "
            "`regionops run replica-resync` to bring the others back",
        )
    if writer_before in primaries:
        others = ", ".join(p for p in primaries if p != writer_before)
        advice = (
            f"`regionops run replica-resync` to rewind {others} onto {writer_before}, whose history "
            "the writer record names (their writes since the split are discarded)"
        )
    else:
        advice = (
            "decide whose history to keep and point the writer record at that node; "
            "`regionops run replica-resync` then rewinds the others onto it"
        )
    return WriterReconcile(
        action="leave",
        primary=None,
        writer_before=writer_before,
        reason=f"{len(primaries)} nodes are primary at once, split brain ({nodes}); the writer record points at "
        f"{writer_before or 'no node'}",
        advice=advice,
    )


def advice_for(
    report: RegionHealthReport, writer: WriterReconcile, fenced: Collection[str] = (), stopped: Collection[str] = ()
) -> list[str]:
    """What to run about each kind of problem region health found in the lab (empty when healthy).

    ``stopped``: nodes whose server is not running at all (and not fenced): ``lab up``
    starts them, which is all a lab that is simply down needs.
    """
    kinds = report.problem_kinds()
    if stopped and len(stopped) == len(report.nodes):
        return ["`regionops lab up` starts the lab (every node is stopped)"]
    advice: list[str] = []
    if stopped:
        advice.append(f"`regionops lab up` starts the stopped node(s) {', '.join(sorted(stopped))} as they last ran")
    if kinds & {"no_primary", "multiple_primaries"} and writer.advice:
        advice.append(f"{writer.reason}: run {writer.advice}")
    elif kinds & {"writer_not_primary", "writer_record_missing"}:
        advice.append("`regionops lab up` points the writer record at the primary")
    replicas = sorted(
        {
            p.subject
            for p in report.problems
            if p.kind in {"replica_not_streaming", "replica_wrong_timeline", "node_unreachable"}
        }
        | set(fenced)
    )
    if replicas and report.primary:
        advice.append(f"`regionops run replica-resync` to repair {', '.join(replicas)}")
    if kinds & {"app_down", "bucket_unreachable"}:
        advice.append("`regionops lab up` starts every lab process that is not running")
    if "replica_lagging" in kinds:
        advice.append("lagging replicas catch up by themselves; `regionops run replica-resync` waits for them")
    return advice
