"""Restores with pgBackRest: which set and target, restore verification's result, the real restore's plan.

The real restore's steps on the node's host (stage, activate) are in
:mod:`regionops.backup.restore_on_host`.

A real restore never writes into the node's data directory.  ``pgbackrest restore``
writes into an EMPTY directory beside it (``<data_dir>.restore-<label>``; a used one is
refused), the copy is started on a loopback port, recovers to the target and is
proven, and only then are the directories swapped: the old one is renamed aside
(``<data_dir>.pre-restore-<label>``) and kept until the node runs from the new one.
A failure after the swap swaps back.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel

from regionops.drivers.postgres import NodeState
from regionops.errors import ConfigurationError, PreconditionFailed
from regionops.lsn import Lsn
from regionops.model.restore import (
    BackupSet,
    Fingerprint,
    Phase,
    RequestedTarget,
    RestoreDiskFacts,
    RestorePlan,
    RestoreTarget,
    Role,
    TableCheck,
    human_bytes,
)
from regionops.topology import Topology


class RestoreVerification(BaseModel):
    """The outcome of a restore verification: phases, times and what the data looked like."""

    label: str
    cluster: str
    repo: int
    target: str
    passed: bool
    phases: list[Phase]
    restore_seconds: float
    total_seconds: float
    tables: list[TableCheck] = []
    error: str | None = None

    def sentence(self) -> str:
        """The verdict as a sentence.

        'backup … of core restored to … and verified: restore time 3.1 s (total 4.0 s); public.orders 5000 rows match'.
        """
        if not self.passed:
            return f"restore verification of backup {self.label} of {self.cluster} FAILED: {self.error}"
        verb = "match the proof" if any(t.compared for t in self.tables) else "(counted)"
        data = "; ".join(f"{t.table} {t.restored_rows} rows" for t in self.tables) or "no fingerprint tables"
        return (
            f"backup {self.label} of {self.cluster} restored from repo{self.repo} to {self.target} and verified: "
            f"restore time {self.restore_seconds:.1f} s (total {self.total_seconds:.1f} s); {data} {verb}"
        )


# -- which set, which target (pure: what pgBackRest lists and the proof record) -----------
def _parse_time(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise ConfigurationError(f"target time {value!r} is not a time such as '2026-11-24 14:04:00+00'") from exc
    if when.tzinfo is None:
        raise ConfigurationError(f"target time {value!r} has no time zone; give it, e.g. '{value}+00'")
    return when


def choose_set(
    cluster: str, sets: list[BackupSet], repo: int, label: str | None, target_type: RequestedTarget, target: str | None
) -> BackupSet:
    """The backup set to restore: ``label``, or the newest that ended before a time/LSN target (else the newest).

    Refuses a set that does not exist, and a target before the chosen set's end
    (recovery can only stop after the backup it starts from is consistent).
    """
    if target_type in ("time", "lsn", "name") and not target:
        raise ConfigurationError(f"a {target_type} target needs `target`")
    if target_type not in ("time", "lsn", "name") and target:
        raise ConfigurationError(f"`target` {target!r} is only for time, lsn or name targets, not {target_type}")
    if not sets:
        raise PreconditionFailed(f"repo{repo} of {cluster} holds no backup set to restore")
    when = _parse_time(target) if target_type == "time" and target else None
    lsn = Lsn.parse(target) if target_type == "lsn" and target else None

    def ended_before(s: BackupSet) -> bool:
        if when is not None:
            return s.stopped <= when
        if lsn is not None and s.lsn_stop:
            return Lsn.parse(s.lsn_stop) <= lsn
        return True

    if label:
        chosen = next((s for s in sets if s.label == label), None)
        if chosen is None:
            raise PreconditionFailed(
                f"backup set {label} does not exist in repo{repo} of {cluster}; sets there: "
                + ", ".join(s.label for s in sets)
            )
        if not ended_before(chosen):
            ended = chosen.lsn_stop if lsn is not None else f"{chosen.stopped:%Y-%m-%d %H:%M:%S}+00"
            raise PreconditionFailed(
                f"target {target_type} {target} is before backup set {label} ended ({ended}): recovery can only "
                "stop after the end of the backup it starts from; choose an older set or a later target"
            )
        return chosen
    fitting = [s for s in sets if ended_before(s)]
    if not fitting:
        raise PreconditionFailed(
            f"no backup set in repo{repo} of {cluster} ended before {target_type} {target}; "
            f"the oldest, {sets[0].label}, ended {sets[0].stopped:%Y-%m-%d %H:%M:%S}+00"
        )
    return fitting[-1]


def target_for(
    cluster: str,
    chosen: BackupSet,
    target_type: RequestedTarget,
    target: str | None,
    proof_point: str | None,
    proof: dict[str, Fingerprint],
    tables: list[str],
) -> RestoreTarget:
    """Where recovery of ``chosen`` stops; ``proof`` applies when that is the set's proof restore point.

    ``proof``: the set's proof record has a restore point: stop there and compare the
    fingerprint; without one, recover to the end of the archive and count rows.
    """
    base = dict(
        cluster=cluster,
        label=chosen.label,
        repo=chosen.repo,
        set_stopped=f"{chosen.stopped:%Y-%m-%d %H:%M:%S}+00",
        tables=sorted(proof) or tables,
    )
    if target_type == "proof":
        if proof_point:
            return RestoreTarget(**base, type="name", target=proof_point, proof_point=True, expected=proof)
        return RestoreTarget(**base, type="default")
    at_proof = target_type == "name" and bool(proof_point) and target == proof_point
    return RestoreTarget(
        **base, type=target_type, target=target, proof_point=at_proof, expected=proof if at_proof else {}
    )


# -- restore onto a node ----------------------------------------------------------------
def plan_restore(
    topology: Topology,
    cluster_name: str,
    node: str,
    target: RestoreTarget,
    states: dict[str, NodeState],
    disk: RestoreDiskFacts,
    role: str = "auto",
    *,
    fenced: Collection[str] = (),
    confirmed_down: Collection[str] = (),
) -> RestorePlan:
    """Decide role and paths, and refuse what would be unsafe.  Changes nothing.

    ``disk`` is what the node's host read (:func:`disk_facts`, through the node seam):
    free space beside the data directory, whether it runs, whether it holds data.

    A node is restored as a **primary** only when it cannot become a second one: every
    other node answers as a replica, or the operator confirmed it is down for good
    (``confirmed_down``: stopped or lost; the runbook fences those before it restores).
    Another primary, a fenced node (an old primary a failover took out, whose successor
    may be cut off) and an unreachable node (it may be a primary we cannot see) refuse it.
    """
    target_node = topology.node(cluster_name, node)
    state = states.get(node)
    primaries = [n for n, s in states.items() if s.reachable and s.role == "primary" and n != node]
    if state is not None and state.reachable and state.role == "primary":
        raise PreconditionFailed(
            f"{node} is the running primary of {cluster_name}; restoring over it would take the cluster's writer "
            "down. Fail over or stop it first"
        )
    unknown = sorted(set(confirmed_down) - set(topology.clusters[cluster_name].nodes))
    if unknown or node in confirmed_down:
        raise ConfigurationError(
            f"confirmed_down names {', '.join(unknown) or node}: only the cluster's other nodes can be confirmed down"
        )
    chosen: Role = ("replica" if primaries else "primary") if role == "auto" else role  # type: ignore[assignment]
    primary = primaries[0] if primaries else None
    if chosen == "replica" and primary is None:
        raise PreconditionFailed(f"cannot restore {node} as a replica: {cluster_name} has no reachable primary")
    if chosen == "primary":
        _refuse_second_primary(cluster_name, node, states, primaries, fenced, confirmed_down)
    if chosen == "replica" and target.type == "default":
        # The end of the archive would end recovery (a new timeline that could never stream
        # from the primary): a replica stops at the backup's end and streams the rest.
        target = target.model_copy(update={"type": "immediate", "target": None})
    data_dir = Path(target_node.data_dir)
    size = next((s.size for s in disk.sets if s.label == target.label), 0)
    needed = int(size * 1.1)
    if needed > disk.free_bytes:
        raise PreconditionFailed(
            f"{data_dir.parent} has {human_bytes(disk.free_bytes)} free; restoring backup "
            f"{target.label} needs about {human_bytes(needed)}"
        )
    return RestorePlan(
        cluster=cluster_name,
        node=node,
        target=target,
        role=chosen,
        primary=primary,
        data_dir=str(data_dir),
        staging_dir=f"{data_dir}.restore-{target.label}",
        old_dir=f"{data_dir}.pre-restore-{target.label}",
        node_running=disk.running,
        node_has_data=disk.has_data,
        needed_bytes=needed,
        free_bytes=disk.free_bytes,
    )


def _refuse_second_primary(
    cluster: str,
    node: str,
    states: dict[str, NodeState],
    primaries: list[str],
    fenced: Collection[str],
    confirmed_down: Collection[str],
) -> None:
    """PreconditionFailed naming every other node that could be (or become) a primary beside the restored one."""
    problems = [f"{p} is a reachable primary (split brain)" for p in primaries]
    problems += [
        f"{n} is confirmed down but answers as a {states[n].role}"
        for n in sorted(confirmed_down)
        if n in states and states[n].reachable and n not in primaries
    ]
    for other, st in sorted(states.items()):
        if other == node or other in primaries or other in confirmed_down:
            continue
        if other in fenced:
            problems.append(f"{other} is fenced (an old primary: its successor may be cut off, not gone)")
        elif not st.reachable:
            problems.append(f"{other} does not answer ({st.error or 'unreachable'}): it may be a primary we cannot see")
    if problems:
        raise PreconditionFailed(
            f"cannot restore {node} as a primary: " + "; ".join(problems) + ". If a node is stopped or lost for "
            "good, name it in confirmed_down (it is fenced before the restore)"
        )
