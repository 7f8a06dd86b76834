"""Runbook: replica resync, bring every replica (or one) back to streaming from the primary.

1. Take the cluster's lock; find the one reachable primary (none: refuse).
2. For each replica: observe it (a down node is judged by its control file), decide
   the repair (pure: nothing, wait, repoint, rewind, reclone) and show the plan.
3. (Dry run: stop here.)  Optional typed approval before the first change.
4. Repair, node-local steps through the node-operation seam:
   - wait: watch it catch up until the lag bound or the deadline;
   - repoint: primary_conninfo at the primary (configure and start it when down);
   - rewind: checkpoint the primary, stop, pg_rewind from it, configure as standby, start;
   - reclone: pg_basebackup into a new directory beside the old, swap, start.
5. Verify each repaired replica streams from the primary within the lag bound; a
   repoint that turns out not to stream is judged again (it may have diverged).
   A verified node's fence (the shared record in the home bucket) is cleared.
   A fenced primary is never a source: resync refuses.
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, Field

from regionops.decisions import RepairAction, RepairDecision, decide_repair, escalate_repair, find_primary
from regionops.errors import VerificationFailed
from regionops.model import NodeState
from regionops.runbook.common import plan_table
from regionops.runbook.context import CHANGE_HOOKS, RunbookRun
from regionops.runbook.params import ClusterChangeParams
from regionops.runbook.reporting import RunReporter
from regionops.topology import Topology, load_topology
from tasks.nodeops import (
    configure_standby,
    data_dir_exists,
    node_running,
    read_control_data,
    reclone_node,
    remove_replaced,
    rewind_node,
    start_node,
    stop_node,
)
from tasks.observe import observe_cluster
from tasks.replication import (
    checkpoint,
    clear_fence,
    current_fencer,
    drop_stale_slots,
    ensure_slots,
    fenced_nodes,
    repoint_replica,
    wait_streaming,
    writer_node,
)

CHANGING: frozenset[RepairAction] = frozenset({"repoint", "rewind", "reclone"})
# A repaired node is judged again at most this often (repoint -> rewind -> reclone).
MAX_ROUNDS = 3


class ResyncParams(ClusterChangeParams):
    """Parameters of the replica-resync runbook (rendered as a form in the Prefect UI; an alert fills `node`)."""

    cluster: str | None = Field(None, description="Cluster to repair; default the topology's only cluster")
    node: str | None = Field(None, description="Only this replica, e.g. eu-1; default every replica")
    max_lag_bytes: int | None = Field(None, ge=0, description="Healthy lag bound; default the topology's")
    verify_timeout_seconds: float = Field(
        120, gt=0, description="How long a repaired (or lagging) replica may take to stream within the bound"
    )
    allow_reclone: bool = Field(True, description="Allow re-cloning a replica from scratch with pg_basebackup")
    keep_replaced_data_dir: bool = Field(False, description="Keep the data directory a reclone replaced")


class NodeRepair(BaseModel):
    """One replica: the decisions taken, what was done, and the verification."""

    node: str
    decisions: list[RepairDecision]
    actions: list[str] = []
    verified: str | None = None
    ok: bool

    @property
    def action(self) -> RepairAction:
        return self.decisions[0].action

    def sentence(self) -> str:
        did = " then ".join(d.action for d in self.decisions)
        return f"{self.node}: {did}; {self.verified or self.decisions[-1].reason}"


class ResyncResult(BaseModel):
    """What the resync did (or would do, in a dry run)."""

    cluster: str
    primary: str
    ok: bool
    dry_run: bool
    repairs: list[NodeRepair]
    steps: list[str] = []

    def sentence(self) -> str:
        if self.dry_run:
            plan = "; ".join(f"{r.node}: {r.action}" for r in self.repairs)
            return f"dry run: resync of {self.cluster} would do {plan}; nothing was changed"
        verdict = "every replica streams" if self.ok else "NOT every replica streams"
        return (
            f"resync of {self.cluster} from {self.primary}: {verdict} ("
            + "; ".join(r.sentence() for r in self.repairs)
            + ")"
        )


@flow(name="replica-resync", persist_result=True, **CHANGE_HOOKS)
def replica_resync(params: ResyncParams = ResyncParams()) -> ResyncResult:
    """Detect lagging, broken or diverged replicas and repair them (wait, repoint, pg_rewind or re-clone)."""
    topology = load_topology(params.topology)
    cluster_name, _ = topology.cluster(params.cluster)
    run = RunbookRun(
        topology,
        "replica-resync",
        cluster_name,
        f"Replica resync of {cluster_name}",
        params,
        start_lines=[
            f"replicas: {params.node or 'all'}",
            "dry run: nothing will be changed" if params.dry_run else "this run may change replicas",
        ],
    )
    with run:
        return _resync(topology, cluster_name, params, run)


def _resync(topology: Topology, cluster_name: str, params: ResyncParams, run: RunbookRun) -> ResyncResult:
    cluster = topology.clusters[cluster_name]
    reporter = run.reporter
    bound = cluster.health.max_lag_bytes if params.max_lag_bytes is None else params.max_lag_bytes

    # 1. The primary every replica must follow.
    states = observe_cluster(topology, cluster_name)
    view = find_primary(topology, cluster_name, states, writer_node(topology, cluster_name))
    if view.primary is None or not view.reachable:
        raise run.refuse(f"resync refused: no reachable primary to follow ({view.reason})")
    primary = view.primary
    fenced = fenced_nodes(topology, cluster_name)
    if primary in fenced:
        # A fenced node may hold a history nobody else has: never copy it onto the replicas.
        raise run.refuse(
            f"resync refused: the primary {primary} is fenced, so it cannot be the source "
            f"({fenced[primary].sentence()})"
        )
    if params.node is not None:
        topology.node(cluster_name, params.node)  # unknown node: a ConfigurationError naming the known ones
        if params.node == primary:
            raise run.refuse(f"{params.node} is the primary; there is no replica to resync")
    targets = [params.node] if params.node else [n for n in cluster.nodes if n != primary]

    # 2. Decide per replica (pure), show the plan.
    decisions = {n: _decide(topology, cluster_name, n, states, primary, bound) for n in targets}
    for d in decisions.values():
        reporter.step(d.reason, slack=d.action != "nothing")
    blocked = [d for d in decisions.values() if d.action == "reclone" and not params.allow_reclone]
    if blocked:
        raise run.refuse(
            "resync refused: "
            + "; ".join(f"{d.node} needs a reclone, which allow_reclone=false forbids" for d in blocked)
        )
    plan = [f"{d.node}: {d.action}: {d.reason}" for d in decisions.values()]

    # 3. Dry run or approval.
    if params.dry_run:
        reporter.finish("dry run", ["nothing was changed"], tables={"plan": plan_table(plan)})
        return ResyncResult(
            cluster=cluster_name,
            primary=primary,
            ok=True,
            dry_run=True,
            repairs=[NodeRepair(node=n, decisions=[d], ok=d.action == "nothing") for n, d in decisions.items()],
            steps=[s for _, s in reporter.steps],
        )
    if params.require_approval and any(d.action in CHANGING for d in decisions.values()):
        run.approve(plan, f"resync {', '.join(sorted(decisions))}")

    # 4-5. Repair and verify, node by node.
    if any(d.action in CHANGING for d in decisions.values()):
        run.changed = True
        reporter.step(ensure_slots(topology, cluster_name, primary, targets).sentence(), slack=False)
    repairs = [
        _repair(topology, cluster_name, node, decision, primary, bound, params, reporter, node in fenced)
        for node, decision in decisions.items()
    ]

    result = ResyncResult(
        cluster=cluster_name,
        primary=primary,
        ok=all(r.ok for r in repairs),
        dry_run=False,
        repairs=repairs,
        steps=[s for _, s in reporter.steps],
    )
    table = [
        {"node": r.node, "actions": " then ".join(d.action for d in r.decisions), "ok": r.ok, "result": r.verified}
        for r in repairs
    ]
    if not result.ok:
        reporter.finish("failed", [result.sentence()], tables={"replicas": table})
        raise VerificationFailed(result.sentence())
    reporter.finish("succeeded", [result.sentence()], tables={"replicas": table})
    return result


def _decide(
    topology: Topology, cluster_name: str, node: str, states: dict[str, NodeState], primary: str, bound: int
) -> RepairDecision:
    """Observe-what-we-can and decide: a down node is judged by its control file (last known state)."""
    spec = topology.clusters[cluster_name].nodes[primary]
    state = states[node]
    exists = data_dir_exists(topology, cluster_name, node)
    control = read_control_data(topology, cluster_name, node) if exists else None
    if not state.reachable and control is not None:
        state = control.last_known_state(state.error)
    return decide_repair(
        state,
        states[primary],
        expected_primary_endpoint=(spec.host, spec.port),
        data_dir_exists=exists,
        max_lag_bytes=bound,
        rewind_possible=control.rewindable if control else True,
    )


def _act(topology: Topology, cluster_name: str, decision: RepairDecision, primary: str) -> list[str]:
    """Carry out one repair decision; returns the sentences of what was done."""
    node = decision.node
    done: list[str] = []
    if decision.action == "repoint" and decision.start_required:
        done.append(configure_standby(topology, cluster_name, node, primary).sentence())
        done.append(start_node(topology, cluster_name, node).sentence())
    elif decision.action == "repoint":
        done.append(repoint_replica(topology, cluster_name, node, primary).sentence())
    elif decision.action == "rewind":
        done.append(checkpoint(topology, cluster_name, primary).sentence())
        if node_running(topology, cluster_name, node):
            done.append(stop_node(topology, cluster_name, node, "fast").sentence())
        done.append(rewind_node(topology, cluster_name, node, primary).sentence())
        done.append(start_node(topology, cluster_name, node).sentence())
    elif decision.action == "reclone":
        done.append(reclone_node(topology, cluster_name, node, primary).sentence())
        done.append(start_node(topology, cluster_name, node).sentence())
    return done


def _repair(
    topology: Topology,
    cluster_name: str,
    node: str,
    decision: RepairDecision,
    primary: str,
    bound: int,
    params: ResyncParams,
    reporter: RunReporter,
    fenced: bool,
) -> NodeRepair:
    """Act, verify, and when a change did not make the node stream, judge it again (up to MAX_ROUNDS)."""
    repair = NodeRepair(node=node, decisions=[decision], ok=False)
    for _ in range(MAX_ROUNDS):
        try:
            for sentence in _act(topology, cluster_name, decision, primary):
                reporter.step(sentence)
                repair.actions.append(sentence)
        except Exception as exc:  # noqa: BLE001 - one replica's failure must not stop the others' repair
            repair.verified = f"{decision.action} of {node} failed: {exc}"
            reporter.step(repair.verified)
            return repair
        # A repoint either streams within seconds or the node diverged: judge it again soon.
        timeout = (
            min(params.verify_timeout_seconds, 30) if decision.action == "repoint" else (params.verify_timeout_seconds)
        )
        check = wait_streaming(topology, cluster_name, node, primary, bound, timeout)
        repair.verified = check.sentence()
        if check.ok or decision.action not in CHANGING:
            break
        # It did not stream after the change: look again, it may have diverged after all.
        states = observe_cluster(topology, cluster_name, [node, primary])
        again = _decide(topology, cluster_name, node, states, primary, bound)
        escalation = escalate_repair(repair.decisions, again, allow_reclone=params.allow_reclone, max_rounds=MAX_ROUNDS)
        reporter.step(escalation.reason)
        if escalation.next is None:
            break
        decision = escalation.next
        repair.decisions.append(decision)
    repair.ok = bool(repair.verified) and check.ok
    reporter.step(check.sentence(), slack=repair.ok is False or decision.action != "nothing")
    if repair.ok and decision.action in CHANGING:
        reporter.step(drop_stale_slots(topology, cluster_name, node).sentence(), slack=False)
    if repair.ok and fenced:
        cleared = clear_fence(
            topology,
            cluster_name,
            node,
            current_fencer(topology, "replica-resync"),
            f"verified: it streams from {primary} again",
        )
        if cleared is not None:
            reporter.step(cleared.sentence())
    if repair.ok and "reclone" in {d.action for d in repair.decisions} and not params.keep_replaced_data_dir:
        reporter.step(remove_replaced(topology, cluster_name, node).sentence(), slack=False)
    return repair
