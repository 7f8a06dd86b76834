"""Which node is the cluster's primary, from what was observed, even when it is down.

A reachable node in role primary is the evidence.  When none answers, the writer DNS
record (where clients were sent) and the replicas' WAL receivers (whom they were
following) name the node that *was* primary: the one a failover must replace.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from regionops.decisions._common import Decision
from regionops.model import NodeState
from regionops.topology import Topology


class PrimaryView(Decision):
    """The primary as far as the observations tell, whether it answered, and how we know."""

    cluster: str
    primary: str | None
    reachable: bool  # the primary answered as a primary
    other_primaries: tuple[str, ...] = ()  # reachable nodes that also claim to be primary
    writer_node: str | None = None
    reason: str


def _sender_node(topology: Topology, cluster: str, state: NodeState) -> str | None:
    """The node a replica's WAL receiver points at (by host and port), if it is one of the cluster's."""
    receiver = state.wal_receiver
    if receiver is None or receiver.sender_host is None:
        return None
    for name, node in topology.clusters[cluster].nodes.items():
        same_host = node.host.rstrip(".").lower() == receiver.sender_host.rstrip(".").lower()
        if same_host and receiver.sender_port in (None, node.port):
            return name
    return None


def find_primary(
    topology: Topology, cluster: str, states: Mapping[str, NodeState], writer_node: str | None
) -> PrimaryView:
    """Name the cluster's primary.

    - One reachable primary: that node.
    - Several: the one the writer record points at (the others are diverged old
      primaries); none of them when the record points elsewhere (ambiguous).
    - None reachable: the writer record's node, unless that node answers as a replica;
      else the node most replicas' WAL receivers were following.
    """
    primaries = sorted(n for n, s in states.items() if s.reachable and s.role == "primary")
    writer = f"; the writer record points at {writer_node}" if writer_node else "; the writer record names no node"

    if len(primaries) == 1:
        only = primaries[0]
        note = "" if writer_node in (None, only) else f" (but the writer record points at {writer_node})"
        return PrimaryView(
            cluster=cluster,
            primary=only,
            reachable=True,
            writer_node=writer_node,
            reason=f"{only} is the only reachable primary{note}",
        )
    if len(primaries) > 1:
        others = tuple(p for p in primaries if p != writer_node)
        if writer_node in primaries:
            return PrimaryView(
                cluster=cluster,
                primary=writer_node,
                reachable=True,
                other_primaries=others,
                writer_node=writer_node,
                reason=(
                    f"{len(primaries)} nodes answer as primary ({', '.join(primaries)}); {writer_node} is "
                    f"the one the writer record points at, so {', '.join(others)} hold(s) a diverged history"
                ),
            )
        return PrimaryView(
            cluster=cluster,
            primary=None,
            reachable=False,
            other_primaries=tuple(primaries),
            writer_node=writer_node,
            reason=f"{len(primaries)} nodes answer as primary ({', '.join(primaries)}) and none is the writer "
            f"record's target{writer}: which history is right is ambiguous",
        )

    writer_state = states.get(writer_node) if writer_node else None
    if writer_node and not (writer_state and writer_state.reachable and writer_state.role == "replica"):
        return PrimaryView(
            cluster=cluster,
            primary=writer_node,
            reachable=False,
            writer_node=writer_node,
            reason=f"no node answers as primary; the writer record points at {writer_node}, "
            f"which does not answer as a replica either, so it is the missing primary",
        )
    followed = Counter(n for n in (_sender_node(topology, cluster, s) for s in states.values() if s.reachable) if n)
    if followed:
        (node, votes), *rest = followed.most_common()
        if not rest or rest[0][1] < votes:
            return PrimaryView(
                cluster=cluster,
                primary=node,
                reachable=False,
                writer_node=writer_node,
                reason=f"no node answers as primary; {votes} replica(s) were following {node}{writer}",
            )
    return PrimaryView(
        cluster=cluster,
        primary=None,
        reachable=False,
        writer_node=writer_node,
        reason=f"no node answers as primary and the replicas do not agree whom they follow{writer}",
    )
