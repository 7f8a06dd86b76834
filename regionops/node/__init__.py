"""The node-operation seam: steps that touch a node's own machine (pg_ctl, data directory, WAL files).

- :mod:`regionops.node.operator`: the :class:`NodeOperator` protocol and :class:`NodeOpResult`;
- :mod:`regionops.node.local`: :class:`LocalNodeOperator`, the steps performed on this machine;
- :mod:`regionops.node.regional`: :class:`RegionalNodeOperator`, each step a run of the
  node-operation deployment on the node's region's work pool (:mod:`regionops.node.flow`);
- :mod:`regionops.node.standing`: the "where do I stand" check every step makes first.

The topology says which operator a cluster uses (``clusters.<c>.node_operator``).
"""

from __future__ import annotations

from regionops.node.local import LocalNodeOperator, kill_instance, replication_conninfo
from regionops.node.operator import (
    RECLONE_MARK,
    REPLACED_MARK,
    NodeOperator,
    NodeOpResult,
    Operation,
    StopMode,
)
from regionops.topology import Topology


def node_operator_for(topology: Topology, cluster: str) -> NodeOperator:
    """The node operator the topology names for ``cluster``: local (this machine) or regional (work pools)."""
    _, spec = topology.cluster(cluster)
    if spec.node_operator == "regional":
        from regionops.node.regional import RegionalNodeOperator  # imports Prefect's client

        return RegionalNodeOperator(topology, cluster)
    return LocalNodeOperator(topology, cluster)


__all__ = ["LocalNodeOperator", "NodeOperator", "NodeOpResult", "Operation", "StopMode", "RECLONE_MARK",
           "REPLACED_MARK", "kill_instance", "node_operator_for", "replication_conninfo"]
