"""Residency, enforced before any byte of a backup moves.

The topology loader already rejects ``copy_to`` targets outside a cluster's residency;
this check runs again at run time, because parameters can name other regions and a
topology can change between load and run.
"""

from __future__ import annotations

from regionops.errors import ConfigurationError, ResidencyViolation
from regionops.topology import Region, Topology


def check_backup_region(topology: Topology, cluster_name: str, region_name: str, purpose: str) -> Region:
    """The region, if ``cluster_name``'s data may live there; else ResidencyViolation naming the rule.

    ``purpose`` says what was about to happen ("backup", "copy of backup 2026...Z").
    """
    _, cluster = topology.cluster(cluster_name)
    region = topology.regions.get(region_name)
    if region is None:
        raise ConfigurationError(
            f"{purpose} of cluster {cluster_name}: unknown region {region_name!r}; "
            f"regions: {', '.join(sorted(topology.regions))}"
        )
    if not cluster.allows_zone(region.residency):
        raise ResidencyViolation(
            f"{purpose} of cluster {cluster_name} to region {region_name} (bucket {region.bucket}) refused: "
            f"region {region_name} is in residency zone {region.residency!r}, and the rule "
            f"clusters.{cluster_name}.residency = [{', '.join(cluster.residency)}] forbids it; "
            "nothing was copied"
        )
    return region


def check_all(topology: Topology, cluster_name: str, regions: list[str], purpose: str) -> None:
    """Check every target before the first one is used, so a refusal moves nothing at all."""
    for region in regions:
        check_backup_region(topology, cluster_name, region, purpose)
