"""A node step never acts on an unverified data directory, even when no member of the cluster answers.

With every node down there is no member to ask for the cluster's system identifier; the
step then compares with the identifier recorded when the cluster was last seen healthy
(``lab up`` and region health record it), and refuses when there is none or it differs.
"""

from __future__ import annotations

import pytest

from regionops.errors import PreconditionFailed
from regionops.ha.identity import ClusterIdentity, IdentityStore
from regionops.lab import pglab
from regionops.lab.config import LAB_NODES
from regionops.node import LocalNodeOperator
from tests import ha_tools as ha
from tests import labtools

pytestmark = pytest.mark.lab


def test_with_every_node_down_a_step_trusts_only_the_recorded_identifier(lab):
    ha.expect_layout(lab, "eu-1")
    topo = lab.topology()
    store = IdentityStore.for_topology(topo)
    recorded = store.get("core")
    assert recorded is not None, "lab up records the identity of the healthy cluster"
    assert recorded.system_identifier == ha.state(lab, "eu-1").system_identifier
    bucket = topo.regions["eu"].bucket
    for node in ("apac-1", "us-1", "eu-1"):  # replicas first: eu-1's shutdown checkpoint reaches them
        pglab.pgctl(lab.cfg, node).stop("fast")
    try:
        # No record: nothing proves eu-1's directory is core's, so the step refuses and starts nothing.
        store.store.delete(bucket, [store.key("core")])
        with pytest.raises(PreconditionFailed, match="no member of the cluster answered .* nothing was changed"):
            LocalNodeOperator(topo, "core").start("eu-1")
        # Another cluster's identifier on record: refused too, naming both.
        store.store.put_bytes(
            bucket,
            store.key("core"),
            ClusterIdentity(cluster="core", system_identifier="1234567890", members=["eu-1"], by="test")
            .model_dump_json()
            .encode(),
        )
        with pytest.raises(PreconditionFailed, match="but the cluster .*reports 1234567890"):
            LocalNodeOperator(topo, "core").start("eu-1")
        assert not pglab.pgctl(lab.cfg, "eu-1").is_running()
        # The identifier recorded while the cluster was healthy: the step acts.
        store.store.put_bytes(bucket, store.key("core"), recorded.model_dump_json().encode())
        assert LocalNodeOperator(topo, "core").start("eu-1").changed
    finally:
        store.store.put_bytes(bucket, store.key("core"), recorded.model_dump_json().encode())
        for node in LAB_NODES:
            ctl = pglab.pgctl(lab.cfg, node)
            if not ctl.is_running():
                ctl.start()
        labtools.wait_steady(lab)
    ha.expect_layout(lab, "eu-1")
