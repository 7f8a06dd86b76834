"""What the hook of a killed run does so that exactly one writable primary remains: pure.

A cancelled run's process is killed wherever it was; its ``finally`` blocks never run.
Two runbooks can leave a cluster unsafe that way:

- the DR drill: its fault may still be in place, its recovery stopped at any step;
- a switchover (on its own, or the drill's rollback): between stopping the old primary
  and moving the writer record, no node takes writes at all.

:func:`decide_rescue` takes what the hook observed (every node's state, the writer
record, disk and fence facts, where the switchover was) and returns the steps, each with
its reason.  It never makes a second primary and never loses an acknowledged write:

- a switchover's old primary holds every acknowledged write until the target is
  promoted (the target only replays them), so until then giving the old primary its
  writes back is always safe;
- a target that may have been asked to promote and has not become primary is stopped and
  kept from starting as one *before* the old primary takes writes again;
- a node fenced by someone else (a failover's record, standby.signal) is never unfenced:
  that needs a human or the failover runbook, and is named.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from regionops.model import NodeState

RescueKind = Literal[
    "resume",
    "kill",
    "start",
    "unfence-start",
    "restore-writer",
    "block-start",
    "point-writer",
    "fence-writes",
    "start-app",
    "escalate",
]

# stopping: the old primary is being fenced and stopped; nobody was asked to promote yet.
# promoting: pg_promote may have reached the target; the writer record still names the old primary.
# moved: the writer record names the target; the old primary is stopped and not yet a replica.
SwitchoverPhase = Literal["stopping", "promoting", "moved"]


class SwitchoverWindow(BaseModel):
    """Where a switchover was when its run was killed, from its journal."""

    old: str
    new: str
    phase: SwitchoverPhase


class RescueAction(BaseModel):
    """One step that brings a killed run's cluster back to exactly one writable primary."""

    kind: RescueKind
    node: str | None = None
    why: str
    # The steps after this one are only safe once it is done (a target stopped before the old
    # primary takes writes again): when it fails, the rescue stops there and says so.
    stop_if_failed: bool = False

    def sentence(self) -> str:
        return f"{self.kind} {self.node or ''}: {self.why}".replace("  ", " ")


def decide_rescue(
    fault: str,
    target: str | None,
    states: dict[str, NodeState],
    writer: str | None,
    *,
    target_frozen: bool,
    target_fenced_on_disk: bool,
    fenced_by_this_drill: bool = False,
    window: SwitchoverWindow | None = None,
    writer_fenced: bool = False,
) -> list[RescueAction]:
    """What a killed drill or switchover must do to leave exactly one writable primary, named by the writer record.

    ``fault`` and ``target`` are the drill's (empty and None for a switchover).  Never makes
    a second primary: a frozen target is resumed only when nobody else took writes (else
    it is killed), a crashed target is started only when no other node is writable and its
    data directory is not fenced.  A fence the drill's own failover laid before it was
    cancelled (``fenced_by_this_drill``: fenced after the drill took the cluster lock, so
    no other runbook could have) is lifted when nobody was promoted: the fenced old primary
    is then the only node that can take writes.  When no node takes writes and nobody was
    promoted, the node the writer record names gets its writes back, unless it is fenced
    (``writer_fenced``: a fence record, standby.signal, or unreadable).  What needs a
    runbook is named, not done.
    """
    writable = [n for n, s in states.items() if s.reachable and s.role == "primary" and not s.read_only and n != target]
    actions: list[RescueAction] = []
    if fault in ("region-outage", "region-partition") and target:
        actions.append(
            RescueAction(kind="start-app", node=target, why="the drill's region fault: heal its links, start its app")
        )
    if target and target_frozen:
        if writable:
            actions.append(
                RescueAction(
                    kind="kill",
                    node=target,
                    why=f"{', '.join(writable)} took writes: the frozen old primary must not resume",
                )
            )
        else:
            actions.append(RescueAction(kind="resume", node=target, why="no other node took writes: it is the primary"))
            writable = [target]
    elif (
        target
        and states.get(target) is not None
        and not states[target].reachable
        and fault in ("primary-crash", "region-outage")
    ):
        if writable:
            pass  # left down: replica-resync rewinds it later
        elif target_fenced_on_disk and fenced_by_this_drill:
            actions.append(
                RescueAction(
                    kind="unfence-start",
                    node=target,
                    why="the drill's own failover fenced it and was cancelled before promoting "
                    "anyone: lifting that fence and starting it keeps one primary",
                )
            )
            writable = [target]
        elif target_fenced_on_disk:
            actions.append(
                RescueAction(
                    kind="escalate",
                    node=target,
                    why="no node is writable and the old primary is fenced: run the failover runbook",
                )
            )
        else:
            actions.append(
                RescueAction(
                    kind="start",
                    node=target,
                    why="no other node took writes: restarting the crashed primary keeps one primary",
                )
            )
            writable = [target]
    elif (
        target
        and states.get(target) is not None
        and states[target].reachable
        and states[target].role == "primary"
        and not states[target].read_only
    ):
        writable = [target, *writable]
    if not writable:
        given_back = _give_writes_back(states, writer, window, writer_fenced, decided={a.node for a in actions})
        actions += given_back
        if given_back and given_back[-1].kind == "restore-writer":
            writable = [given_back[-1].node or ""]
    if len(writable) > 1:
        keep = writer if writer in writable else writable[0]
        for node in writable:
            if node != keep:
                actions.append(
                    RescueAction(
                        kind="fence-writes", node=node, why=f"two writable primaries: the writer record names {keep}"
                    )
                )
        writable = [keep]
    if len(writable) == 1:
        blocked = {target} if target_fenced_on_disk else set()
        blocked |= {writer} if writer_fenced else set()
        actions += _keep_old_primary_down(states, writer, window, writable[0], {a.node for a in actions} | blocked)
    if len(writable) == 1 and writer != writable[0]:
        actions.append(
            RescueAction(
                kind="point-writer",
                node=writable[0],
                why=f"the writer record names {writer or 'no node'}, the primary is {writable[0]}",
            )
        )
    return actions


def _give_writes_back(
    states: dict[str, NodeState],
    writer: str | None,
    window: SwitchoverWindow | None,
    writer_fenced: bool,
    decided: set[str | None],
) -> list[RescueAction]:
    """No node takes writes: give them back to the writer record's node when nobody was promoted."""
    if writer is None or writer not in states or writer in decided:
        return []
    promoted = [n for n, s in states.items() if n != writer and s.reachable and s.role == "primary"]
    if promoted:
        return [
            RescueAction(
                kind="escalate",
                node=promoted[0],
                why=f"{promoted[0]} was promoted but takes no writes and the writer record names {writer}: "
                "giving either its writes could make two primaries; a human decides",
            )
        ]
    state = states[writer]
    if state.reachable and state.role == "replica":
        return [
            RescueAction(
                kind="escalate",
                node=writer,
                why=f"no node takes writes and {writer}, which the writer record names, is a replica: "
                "run the failover runbook",
            )
        ]
    if writer_fenced:
        return [
            RescueAction(
                kind="escalate",
                node=writer,
                why=f"no node takes writes and {writer}, which the writer record names, is fenced: "
                "run the failover runbook",
            )
        ]
    steps: list[RescueAction] = []
    if window is not None and window.phase == "promoting" and window.old == writer and window.new in states:
        steps.append(
            RescueAction(
                kind="kill",
                node=window.new,
                why=f"the switchover was killed while promoting {window.new} and it has not become primary: "
                f"it is stopped and kept from starting as one before {writer} takes writes again",
                stop_if_failed=True,
            )
        )
    where = f"the switchover to {window.new} stopped it" if window is not None and window.old == writer else "it"
    steps.append(
        RescueAction(
            kind="restore-writer",
            node=writer,
            why=f"no node takes writes and nobody was promoted; {where} still holds every acknowledged write: "
            "started if stopped and given its writes back",
        )
    )
    return steps


def _keep_old_primary_down(
    states: dict[str, NodeState],
    writer: str | None,
    window: SwitchoverWindow | None,
    keep: str,
    settled: set[str | None],
) -> list[RescueAction]:
    """A stopped former primary that another node replaced must never start as a second primary."""
    old = [writer, window.old if window is not None else None]
    return [
        RescueAction(
            kind="block-start",
            node=node,
            why=f"{keep} is the primary now: the stopped former primary must not start as a second one "
            "(replica-resync makes it a replica)",
        )
        for node in dict.fromkeys(old)
        if node is not None
        and node != keep
        and node not in settled
        and states.get(node) is not None
        and not states[node].reachable
    ]
