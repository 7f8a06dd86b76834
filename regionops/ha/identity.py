"""The cluster's system identifier, recorded when the cluster was last seen healthy.

A node step compares the data directory it is about to touch with the system
identifier a reachable member reports over SQL (:mod:`regionops.node.standing`).  When
no member answers (the whole cluster is down, a restore onto the last node standing),
there is nothing to compare with, and a stop, a re-clone or a swap could hit another
database that happens to live at the same path and port.  So region health (and
``lab up``) records the identifier every healthy member agrees on, in the cluster's
home bucket beside the fences; with no member answering, a node step compares with
that record, and refuses when there is none.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from regionops.drivers.objectstore import ObjectNotFound, ObjectStore, objectstore_for
from regionops.ha.fencing import home_bucket
from regionops.model import NodeState
from regionops.topology import Topology

log = logging.getLogger(__name__)


class ClusterIdentity(BaseModel):
    """The system identifier every member of a healthy cluster reported, and when."""

    cluster: str
    system_identifier: str
    seen_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    members: list[str]
    by: str  # what recorded it (region-health, lab up)

    def sentence(self) -> str:
        """``system identifier 7312... of core, recorded by region-health at 2026-12-04 21:00 UTC (eu-1, us-1)``."""
        return (
            f"system identifier {self.system_identifier} of {self.cluster}, recorded by {self.by} when the "
            f"cluster was last seen healthy ({self.seen_at:%Y-%m-%d %H:%M} UTC, {', '.join(self.members)})"
        )


def agreed_identifier(states: dict[str, NodeState]) -> str | None:
    """The identifier every reachable member reports, when they all report the same one (else None)."""
    seen = {s.system_identifier for s in states.values() if s.reachable}
    return seen.pop() if len(seen) == 1 and None not in seen else None


class IdentityStore:
    """Recorded cluster identities, in each cluster's home bucket (``identity/<cluster>.json``)."""

    def __init__(self, store: ObjectStore, topology: Topology):
        self.store = store
        self.topology = topology

    @classmethod
    def for_topology(cls, topology: Topology) -> IdentityStore:
        """Records through the topology's object store."""
        return cls(objectstore_for(topology), topology)

    @staticmethod
    def key(cluster: str) -> str:
        """The object key of a cluster's record."""
        return f"identity/{cluster}.json"

    def get(self, cluster: str) -> ClusterIdentity | None:
        """The recorded identity, or None when none was ever recorded."""
        try:
            data = self.store.get_bytes(home_bucket(self.topology, cluster), self.key(cluster))
        except ObjectNotFound:
            return None
        return ClusterIdentity.model_validate_json(data)

    def record_healthy(self, cluster: str, states: dict[str, NodeState], by: str) -> ClusterIdentity | None:
        """Record what the healthy ``states`` agree on (only when it differs from the record).  None: no agreement."""
        sysid = agreed_identifier(states)
        if sysid is None:
            return None
        current = self.get(cluster)
        if current is not None and current.system_identifier == sysid:
            return current
        identity = ClusterIdentity(
            cluster=cluster, system_identifier=sysid, by=by, members=sorted(n for n, s in states.items() if s.reachable)
        )
        self.store.put_bytes(
            home_bucket(self.topology, cluster),
            self.key(cluster),
            identity.model_dump_json(indent=2).encode(),
            content_type="application/json",
        )
        log.info("recorded %s", identity.sentence())
        return identity
