"""Which replica to promote when the primary is gone.

Pure: it reads the topology and observed node states and returns a decision with its
reason; the failover flow does the promoting.  Every node of the cluster appears in the
ranking, eligible or not, so a report can show why the winner won and why the others
were passed over.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Set
from typing import Literal

from regionops.decisions._common import Decision, fmt_bytes, join_clauses
from regionops.lsn import Lsn
from regionops.model import NodeState
from regionops.topology import Topology

LsnSource = Literal["replay", "receive"]


class CandidateRank(Decision):
    """One node's line in the ranking: where it is, how far it got, and whether it may be promoted."""

    node: str
    region: str | None = None
    lsn: Lsn | None = None
    lsn_source: LsnSource | None = None  # "receive" when replay_lsn was unknown and receive_lsn stood in
    priority: int | None = None
    eligible: bool
    rank: int | None = None  # 1 = best; None for ineligible nodes
    why: str  # why it is eligible ("reachable replica in region us") or every reason it is not


class PromotionDecision(Decision):
    """The replica to promote (or None) and the full ranking behind the choice."""

    cluster: str
    candidate: str | None
    candidate_lsn: Lsn | None = None
    reference_system_identifier: str | None = None  # the identifier candidates had to share
    ranking: tuple[CandidateRank, ...]  # eligible nodes best first, then ineligible ones by name
    reason: str


def _reference_system_identifier(
    states: Mapping[str, NodeState], members: Set[str], old_primary: str | None
) -> tuple[str | None, str, bool]:
    """The system identifier the new primary must have, how it was established, and whether it is ambiguous.

    The old primary's identifier wins when known: it *is* the cluster's data.  Without it
    a strict plurality of the reachable members decides; a tie means we cannot tell which
    node holds the real cluster, so no identifier is trusted (and nobody is promoted).
    """
    old = states.get(old_primary) if old_primary else None
    if old is not None and old.system_identifier:
        return old.system_identifier, f"that of the old primary {old_primary}", False
    counts = Counter(
        s.system_identifier for name, s in states.items() if name in members and s.reachable and s.system_identifier
    )
    if not counts:
        # Nothing to compare against: the check is skipped rather than blocking failover.
        return None, "unknown: no node reported one", False
    (best, n), *rest = counts.most_common()
    if rest and rest[0][1] == n:
        disagree = ", ".join(f"{sid} on {c} node(s)" for sid, c in sorted(counts.items()))
        return None, f"ambiguous: reachable nodes disagree ({disagree})", True
    return best, f"held by {n} of {sum(counts.values())} reachable nodes", False


def _position(state: NodeState) -> tuple[Lsn | None, LsnSource | None]:
    """What a replica has applied: replay LSN, else what it received (still on disk, will replay)."""
    if state.replay_lsn is not None:
        return state.replay_lsn, "replay"
    if state.receive_lsn is not None:
        return state.receive_lsn, "receive"
    return None, None


def choose_promotion_candidate(
    topology: Topology,
    cluster_name: str,
    states: Mapping[str, NodeState],
    *,
    old_primary: str | None,
    exclude_regions: Set[str] = frozenset(),
    allowed_zones: Set[str] | None = None,
    fenced: Set[str] = frozenset(),
) -> PromotionDecision:
    """Pick the replica to promote in ``cluster_name`` from observed ``states`` (keyed by node name).

    Eligible: a node of the cluster, reachable, in role replica, not ``old_primary``, not in
    ``exclude_regions``, in a residency zone the cluster allows (and inside ``allowed_zones``
    when given), not ``fenced`` (marked by an earlier failover), with the cluster's system
    identifier and a known WAL position.  Ranked by replay LSN (receive LSN when replay is
    unknown), then topology priority, then name, so the same inputs always give the same
    answer.
    """
    _, cluster = topology.cluster(cluster_name)
    members = set(cluster.nodes)
    ref_sid, ref_how, ambiguous = _reference_system_identifier(states, members, old_primary)

    rows: list[CandidateRank] = []
    for name in sorted(members | set(states)):
        node = cluster.nodes.get(name)
        state = states.get(name)
        problems: list[str] = []
        region = node.region if node else None
        # Placement rules first: they hold whatever the node's state, and are the ones a
        # human set on purpose (exclusions, residency).
        if node is None:
            problems.append(f"it is not a node of cluster {cluster_name} in the topology")
        if old_primary is not None and name == old_primary:
            problems.append("it is the old primary")
        if name in fenced:
            # A fenced node was an old primary that may hold writes nobody else has:
            # promoting it would resurrect a history the cluster has moved past.
            problems.append("it is fenced (an earlier failover took it out of service)")
        if region is not None and region in exclude_regions:
            problems.append(f"its region {region} is excluded")
        if region is not None:
            zone_region = topology.regions.get(region)
            if zone_region is None:
                problems.append(f"its region {region} is not defined in the topology")
            else:
                zone = zone_region.residency
                if not cluster.allows_zone(zone):
                    problems.append(
                        f"its region {region} is in residency zone {zone}, which cluster "
                        f"{cluster_name} forbids ({', '.join(cluster.residency)})"
                    )
                elif allowed_zones is not None and zone not in allowed_zones:
                    problems.append(
                        f"its region {region} is in residency zone {zone}, outside the allowed "
                        f"zones ({', '.join(sorted(allowed_zones)) or 'none'})"
                    )
        lsn, source = (None, None)
        # State rules: only meaningful for a node we could talk to.
        if state is None:
            problems.append("it was not observed")
        elif not state.reachable:
            problems.append(f"it is unreachable ({state.error or 'no error recorded'})")
        else:
            lsn, source = _position(state)
            if state.role != "replica":
                problems.append("it is already a primary" if state.role == "primary" else "its role is unknown")
            if ref_sid is None and ambiguous:
                problems.append(f"the cluster's system identifier is {ref_how}")
            elif ref_sid is not None and state.system_identifier is None:
                problems.append(f"its system identifier is unknown (the cluster's is {ref_sid})")
            elif ref_sid is not None and state.system_identifier != ref_sid:
                # A node restored from another cluster's backup would happily promote and
                # serve the wrong data: never a candidate.
                problems.append(
                    f"its system identifier {state.system_identifier} differs from the cluster's {ref_sid} ({ref_how})"
                )
            if lsn is None and state.role == "replica":
                problems.append("its WAL position is unknown (no replay or receive LSN)")
        priority = node.priority if node else None
        if problems:
            why = " and ".join(problems)
        else:
            why = f"reachable replica in region {region} with the cluster's system identifier"
        rows.append(
            CandidateRank(
                node=name,
                region=region,
                lsn=lsn,
                lsn_source=source,
                priority=priority,
                eligible=not problems,
                why=why,
            )
        )

    eligible = sorted(
        (r for r in rows if r.eligible),
        # Most WAL first (least data lost), then the operator's preference, then name so
        # that two runs over the same facts never disagree.
        key=lambda r: (-r.lsn.value, -(r.priority or 0), r.node),  # type: ignore[union-attr]
    )
    eligible = [r.model_copy(update={"rank": i}) for i, r in enumerate(eligible, start=1)]
    ineligible = [r for r in rows if not r.eligible]
    ranking = tuple(eligible + ineligible)
    ruled_out = join_clauses(f"{r.node} ({r.why})" for r in ineligible)

    if not eligible:
        reason = f"no replica of {cluster_name} can be promoted: " + join_clauses(
            f"{r.node}: {r.why}" for r in ineligible
        )
        return PromotionDecision(
            cluster=cluster_name,
            candidate=None,
            reference_system_identifier=ref_sid,
            ranking=ranking,
            reason=reason,
        )

    best = eligible[0]
    verb = "replayed" if best.lsn_source == "replay" else "received (replay position unknown)"
    if len(eligible) == 1:
        why_best = f"it is the only eligible replica ({verb} {best.lsn})"
    else:
        second = eligible[1]
        assert best.lsn is not None and second.lsn is not None
        ahead = best.lsn - second.lsn
        if ahead > 0:
            why_best = f"it has {verb} the most WAL ({best.lsn}, {fmt_bytes(ahead)} ahead of {second.node})"
        elif best.priority != second.priority:
            why_best = (
                f"it is level with {second.node} at {best.lsn} and has the higher priority "
                f"({best.priority} vs {second.priority})"
            )
        else:
            why_best = (
                f"it is level with {second.node} at {best.lsn} with the same priority "
                f"({best.priority}); the name breaks the tie"
            )
    reason = f"promote {best.node}: {why_best}"
    if ruled_out:
        reason += f". Not eligible: {ruled_out}"
    return PromotionDecision(
        cluster=cluster_name,
        candidate=best.node,
        candidate_lsn=best.lsn,
        reference_system_identifier=ref_sid,
        ranking=ranking,
        reason=reason,
    )
