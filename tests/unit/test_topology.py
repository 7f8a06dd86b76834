"""Topology loading: a valid file loads; every error is reported, naming its field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from regionops.errors import ConfigurationError, TopologyError
from regionops.topology import load_topology, parse_topology

EXAMPLE = Path(__file__).parents[2] / "deployments" / "topologies" / "example-aws.yaml"


def base() -> dict:
    """A small valid topology to break in each test."""
    return {
        "name": "t",
        "regions": {
            "eu": {
                "aws_region": "eu-west-1",
                "residency": "eu",
                "app_url": "http://eu",
                "bucket": "b-eu",
                "work_pool": "p-eu",
            },
            "us": {
                "aws_region": "us-east-1",
                "residency": "us",
                "app_url": "http://us",
                "bucket": "b-us",
                "work_pool": "p-us",
            },
        },
        "clusters": {
            "core": {
                "nodes": {
                    "eu-1": {"region": "eu", "host": "h1", "port": 5432, "data_dir": "/d"},
                    "us-1": {"region": "us", "host": "h2", "port": 5432, "data_dir": "/d"},
                },
                "writer_record": "writer.core.db.example.com.",
                "backup": {"copy_to": ["us"]},
            }
        },
        "traffic": {"route53_zone": "db.example.com."},
    }


def problems(data: dict) -> list[str]:
    with pytest.raises(TopologyError) as err:
        parse_topology(data, "test.yaml")
    assert "test.yaml" in str(err.value)
    return err.value.problems


def test_example_production_topology_loads():
    topo = load_topology(EXAMPLE)
    assert set(topo.regions) == {"eu", "us", "apac", "eu2"}
    name, core = topo.cluster("core")
    assert core.nodes["us-1"].region == "us"
    assert topo.writer_record("core") == "writer.core.db.example.com."
    assert topo.notifications.slack.token.describe() == "prefect-secret:regionops-slack-bot-token"
    assert topo.clusters["customers-eu"].residency == ["eu"]


def test_valid_small_topology_and_lookups():
    topo = parse_topology(base())
    assert topo.cluster(None)[0] == "core"
    assert topo.node_dns_name("core", "us-1") == "us-1.core.db.example.com."
    assert topo.node_for_dns_name("core", "US-1.core.db.example.com") == "us-1"
    with pytest.raises(ConfigurationError, match="no node 'x'"):
        topo.node("core", "x")


def test_unknown_region_names_the_field():
    data = base()
    data["clusters"]["core"]["nodes"]["us-1"]["region"] = "usa"
    assert problems(data) == ["clusters.core.nodes.us-1.region: unknown region 'usa'"]


def test_duplicate_ports_on_one_host():
    data = base()
    data["clusters"]["core"]["nodes"]["us-1"]["host"] = "h1"
    data["clusters"]["core"]["nodes"]["us-1"]["data_dir"] = "/d2"
    (problem,) = problems(data)
    assert "duplicate port 5432 on host h1" in problem and "core.eu-1" in problem and "core.us-1" in problem


def test_residency_forbids_node_region():
    data = base()
    data["clusters"]["core"]["residency"] = "eu"
    data["clusters"]["core"]["backup"]["copy_to"] = []
    (problem,) = problems(data)
    assert problem.startswith("clusters.core.nodes.us-1.region:")
    assert "residency zone 'us'" in problem and "forbids" in problem


def test_backup_copy_target_outside_residency():
    data = base()
    data["clusters"]["core"]["residency"] = "eu"
    del data["clusters"]["core"]["nodes"]["us-1"]
    (problem,) = problems(data)
    assert problem.startswith("clusters.core.backup.copy_to[0]:")
    assert "would break cluster core's residency" in problem


def test_missing_fields_are_named():
    data = base()
    del data["regions"]["eu"]["bucket"]
    del data["clusters"]["core"]["writer_record"]
    found = problems(data)
    assert "regions.eu.bucket: required field is missing" in found
    assert "clusters.core.writer_record: required field is missing" in found


def test_every_problem_is_reported_at_once():
    data = copy.deepcopy(base())
    data["clusters"]["core"]["nodes"]["us-1"]["region"] = "usa"
    data["clusters"]["core"]["nodes"]["us-1"]["host"] = "h1"
    data["clusters"]["core"]["nodes"]["us-1"]["data_dir"] = "/d2"
    data["clusters"]["core"]["backup"]["copy_to"] = ["mars"]
    found = problems(data)
    assert len(found) == 3, found
    assert any("unknown region 'usa'" in p for p in found)
    assert any("duplicate port" in p for p in found)
    assert any("copy_to[0]: unknown region 'mars'" in p for p in found)


def test_unknown_keys_and_bad_values():
    data = base()
    data["clusters"]["core"]["nodes"]["eu-1"]["prot"] = 1
    data["clusters"]["core"]["nodes"]["eu-1"]["port"] = 70000
    found = problems(data)
    assert "clusters.core.nodes.eu-1.prot: unknown field" in found
    assert any(p.startswith("clusters.core.nodes.eu-1.port:") and "65535" in p for p in found)


def test_writer_record_outside_zone():
    data = base()
    data["clusters"]["core"]["writer_record"] = "writer.example.org."
    assert problems(data) == ["clusters.core.writer_record: 'writer.example.org.' is not inside zone 'db.example.com.'"]


def test_file_errors(tmp_path):
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_topology(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("regions: [unclosed")
    with pytest.raises(TopologyError, match="not valid YAML"):
        load_topology(bad)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(base()))
    assert load_topology(good).name == "t"


def test_multiple_clusters_need_a_name():
    topo = load_topology(EXAMPLE)
    with pytest.raises(ConfigurationError, match="name one of: core, customers-eu"):
        topo.cluster(None)


def test_the_application_section_is_optional_and_checked_when_given():
    assert parse_topology(base()).application is None  # topology files without it still load
    example = load_topology(EXAMPLE)
    assert example.app().release.target == "ecs" and example.assets_bucket("us") == "example-web-assets-us-east-1"
    data = base()
    data["application"] = {
        "release": {"target": "ecs", "canary_region": "mars"},
        "assets": {"buckets": {"moon": "b"}},
        "traffic": {"record": "app.elsewhere.com.", "capacity_rps": {"mars": 1}},
    }
    found = problems(data)
    assert "application.release.canary_region: unknown region 'mars'" in found
    assert "application.release.ecs: required when target is 'ecs'" in found
    assert "application.assets.buckets.moon: unknown region 'moon'" in found
    assert "application.traffic.capacity_rps.mars: unknown region 'mars'" in found
    assert any("application.traffic.record" in p and "not inside zone" in p for p in found)


def test_node_operator_defaults_to_local_and_accepts_regional():
    from regionops.topology import parse_topology

    assert parse_topology(base()).clusters["core"].node_operator == "local"
    data = base()
    data["clusters"]["core"]["node_operator"] = "regional"
    assert parse_topology(data).clusters["core"].node_operator == "regional"


def test_unknown_node_operator_is_named():
    data = base()
    data["clusters"]["core"]["node_operator"] = "ssh"
    (problem,) = problems(data)
    assert problem.startswith("clusters.core.node_operator") and "regional" in problem


def test_two_nodes_on_one_host_cannot_share_a_data_directory():
    data = base()
    data["clusters"]["core"]["nodes"]["us-1"]["host"] = "h1"
    data["clusters"]["core"]["nodes"]["us-1"]["port"] = 5433
    (problem,) = problems(data)
    assert problem == "clusters.core.nodes: 2 nodes on host h1 share data_dir '/d'"


def test_example_topology_runs_node_steps_through_regional_pools():
    from regionops.topology import load_topology

    topo = load_topology(Path(__file__).parents[2] / "deployments" / "topologies" / "example-aws.yaml")
    core = topo.clusters["core"]
    assert core.node_operator == "regional"
    assert len({n.host for n in core.nodes.values()}) == len(core.nodes)


def test_the_quorum_needs_a_member_in_three_known_regions_and_asks_its_own_region_first():
    data = base()
    data["quorum"] = {"endpoints": {"eu": "http://e:2379", "us": "http://u:2379"}}
    assert any("at least three regions (two is not enough" in p for p in problems(data))
    data["quorum"]["endpoints"]["mars"] = "http://m:2379"
    assert any("quorum.endpoints: unknown region 'mars'" in p for p in problems(data))
    example = load_topology(EXAMPLE)
    assert example.quorum is not None and sorted(example.quorum.endpoints) == ["apac", "eu", "us"]
    assert example.quorum.endpoints_from("us")[0] == "http://etcd.us.internal.example.com:2379"
    assert len(example.quorum.endpoints_from(None)) == 3
