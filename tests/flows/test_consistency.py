"""The consistency check at one common point: right under live writes, and a real divergence is named.

The check (:mod:`regionops.drivers.common_point` + :func:`compare_fingerprints`, what the
DR drill's measurement and final checks run) reads every node at one point while the
application keeps writing through an app every 20 ms.  A healthy cluster must then
compare equal every time; a replica whose heap silently differs (one row's bytes
changed on its disk: the corruption a consistency check exists to find) must be named.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from regionops.decisions.drill import Fingerprint, compare_fingerprints
from regionops.drivers.common_point import CommonPointReader
from regionops.drivers.postgres import conninfo_for
from regionops.lab import pglab
from regionops.node import LocalNodeOperator
from regionops.waiting import poll_until
from tests import ha_tools as ha
from tests import labtools

pytestmark = pytest.mark.lab

TABLES = ["public.app_events", "public.customers", "public.orders", "public.products"]


def _check(lab):
    topo = lab.topology()
    c = topo.clusters["core"]
    reader = CommonPointReader(
        "eu-1", conninfo_for(c, c.nodes["eu-1"]), {n: conninfo_for(c, c.nodes[n]) for n in ("us-1", "apac-1")}
    )
    point, prints = reader.read(TABLES)
    typed = {n: {t: Fingerprint.model_validate(v) for t, v in by.items()} for n, by in prints.items()}
    return compare_fingerprints("eu-1", typed, point=point)


def test_nodes_compare_equal_at_one_point_while_the_application_writes(lab):
    ha.expect_layout(lab, "eu-1")
    checks = []
    with ha.writing(lab, "us", interval=0.02) as app:
        poll_until(lambda: app.acked, timeout=10, what="the application's first write")
        first = len(app.acked)
        while len(checks) < 5 or len(app.acked) < first + 30:
            checks.append(_check(lab))
        acked_during = len(app.acked) - first
    assert acked_during >= 30, "the application must write throughout the checks"
    for check in checks:
        assert check.ok, check.sentence()
        assert check.nodes == ["apac-1", "us-1"] and not check.not_compared, check.sentence()
        assert check.point is not None and check.point.held_ms < 1000, check.point
    # the rows the application wrote did land between the checks: the points moved on
    assert len({c.point.lsn for c in checks}) > 1


def _corrupt_one_row(lab, node: str) -> None:
    """Change one product's SKU in ``node``'s heap file on disk (a silent divergence, same row count)."""
    primary = labtools.sql(lab, "eu-1")
    # Frozen and checkpointed, so no later WAL record (hint bits, vacuum) rewrites the page we change.
    primary.query("VACUUM (FREEZE) products")
    primary.checkpoint()
    position = primary.current_lsn()
    replica = labtools.sql(lab, node)
    poll_until(lambda: (replica.replay_lsn() or position) >= position, timeout=30, what=f"{node} to replay")
    replica.checkpoint()  # a restartpoint: the page is on disk
    relpath = replica.query("SELECT pg_relation_filepath('products') AS p")[0]["p"]
    ctl = pglab.pgctl(lab.cfg, node)
    ctl.stop("fast")
    heap = Path(lab.cfg.data_dir(node)) / relpath
    data = heap.read_bytes()
    assert data.count(b"SKU-000017") == 1
    heap.write_bytes(data.replace(b"SKU-000017", b"SKU-00001X"))
    ctl.start()
    labtools.wait_steady(lab)


def test_a_replica_whose_row_differs_is_named_even_under_live_writes(lab):
    ha.expect_layout(lab, "eu-1")
    try:
        _corrupt_one_row(lab, "apac-1")
        with ha.writing(lab, "us", interval=0.02):
            check = _check(lab)
        assert not check.ok
        assert len(check.mismatches) == 1, check.mismatches
        assert check.mismatches[0].startswith("public.products on apac-1:"), check.mismatches
        # same row count, another checksum: the row differs, none is missing
        rows = labtools.sql(lab, "eu-1").query("SELECT count(*) AS n FROM products")[0]["n"]
        assert f"{rows} rows" in check.mismatches[0]
        assert "apac-1" in check.sentence() and "us-1" not in check.mismatches[0]
    finally:
        ops = LocalNodeOperator(lab.topology(), "core")
        ops.reclone("apac-1", "eu-1")
        ops.start("apac-1")
        ops.remove_replaced("apac-1")
        labtools.wait_steady(lab)
    assert _check(lab).ok
