"""Residency and the home region: the pure parts of backups."""

from __future__ import annotations

import pytest

from regionops.decisions.residency import check_all, check_backup_region
from regionops.errors import ConfigurationError, ResidencyViolation
from regionops.topology import home_region, parse_topology
from regionops.units import human_bytes


def topology(residency="eu", copy_to=()):
    regions = {
        name: {
            "aws_region": aws,
            "residency": zone,
            "app_url": f"http://{name}",
            "bucket": f"b-{name}",
            "work_pool": name,
        }
        for name, aws, zone in [("eu", "eu-west-1", "eu"), ("eu2", "eu-central-1", "eu"), ("us", "us-east-1", "us")]
    }
    return parse_topology(
        {
            "name": "t",
            "regions": regions,
            "clusters": {
                "core": {
                    "residency": residency,
                    "nodes": {
                        "eu-1": {"region": "eu", "host": "h1", "port": 5432, "data_dir": "/d1", "priority": 100},
                        "eu-2": {"region": "eu2", "host": "h2", "port": 5432, "data_dir": "/d2", "priority": 90},
                    },
                    "writer_record": "w.core.db.example.com",
                    "backup": {"copy_to": list(copy_to)},
                }
            },
            "traffic": {"route53_zone": "db.example.com"},
        }
    )


def test_human_bytes():
    assert human_bytes(1536) == "1.5 KiB" and human_bytes(12) == "12 B"


def test_home_region_is_the_highest_priority_nodes():
    topo = topology()
    assert home_region(topo.clusters["core"]) == "eu"


def test_residency_allows_a_region_in_the_same_zone():
    assert check_backup_region(topology(), "core", "eu2", "copy").bucket == "b-eu2"


def test_residency_refuses_naming_the_rule():
    with pytest.raises(ResidencyViolation) as err:
        check_all(topology(), "core", ["eu2", "us"], "copy of backup X")
    message = str(err.value)
    assert "region us" in message and "residency zone 'us'" in message
    assert "clusters.core.residency = [eu]" in message and "nothing was copied" in message


def test_residency_global_allows_everything_and_unknown_region_is_a_config_error():
    assert check_backup_region(topology(residency="global"), "core", "us", "copy").bucket == "b-us"
    with pytest.raises(ConfigurationError, match="unknown region 'mars'"):
        check_backup_region(topology(), "core", "mars", "copy")
