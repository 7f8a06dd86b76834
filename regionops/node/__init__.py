"""The node-operation seam: steps that touch a node's own machine (pg_ctl, data directory, WAL files).

- :mod:`regionops.node.operations`: the one table of node operations (name, arguments, typed result);
- :mod:`regionops.node.operator`: the :class:`NodeOperator` protocol and :class:`NodeOpResult`;
- :mod:`regionops.node.local`: :class:`LocalNodeOperator`, the steps performed on this machine;
- :mod:`regionops.node.regional`: :class:`RegionalNodeOperator`, each step a run of the
  node-operation deployment on the node's region's work pool (:mod:`regionops.node.flow`);
- :mod:`regionops.node.standing`: the "where do I stand" check every step makes first.

The topology says which operator a cluster uses (``clusters.<c>.node_operator``).
"""

from __future__ import annotations

from typing import Any

from regionops.node.operator import (
    RECLONE_MARK,
    REPLACED_MARK,
    NodeOperator,
    NodeOpResult,
    Operation,
    StopMode,
)
from regionops.topology import Topology

# The local operator loads the PostgreSQL drivers, the regional one Prefect: both only when
# asked for, so the pure parts (regionops.node.standing, .operator, .messages) stay driver-free.
_LAZY = {
    "LocalNodeOperator": "regionops.node.local",
    "kill_instance": "regionops.drivers.pgtools",
    "replication_conninfo": "regionops.drivers.postgres",
    "RegionalNodeOperator": "regionops.node.regional",
}


def __getattr__(name: str) -> Any:
    """Import the operators on first use (PEP 562)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def node_operator_for(topology: Topology, cluster: str) -> NodeOperator:
    """The node operator the topology names for ``cluster``: local (this machine) or regional (work pools)."""
    _, spec = topology.cluster(cluster)
    if spec.node_operator == "regional":
        from regionops.node.regional import RegionalNodeOperator

        return RegionalNodeOperator(topology, cluster)
    from regionops.node.local import LocalNodeOperator

    return LocalNodeOperator(topology, cluster)


__all__ = [
    "LocalNodeOperator",
    "RegionalNodeOperator",
    "NodeOperator",
    "NodeOpResult",
    "Operation",
    "StopMode",
    "RECLONE_MARK",
    "REPLACED_MARK",
    "kill_instance",
    "node_operator_for",
    "replication_conninfo",
]
