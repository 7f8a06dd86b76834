"""Release tasks: each calls one driver or library function and carries the retry policy.

Deploys are not retried automatically: a half-done deploy is for the rollback to undo,
not for a blind second attempt (an ECS retry would register another revision).
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from regionops.drivers.appmetrics import metrics_source_for
from regionops.drivers.cdn import Invalidation, cdn_for
from regionops.drivers.deploy import DeployResult, RunningVersion
from regionops.drivers.objectstore import objectstore_for
from regionops.drivers.probes import prober_for, traffic_maker_for
from regionops.model.release import GateMeasurement, GateThresholds
from regionops.release import health
from regionops.release.assets import AssetFile, BucketPublish, publish
from regionops.release.targets import target_for
from regionops.topology import Topology
from tasks.common import TRANSIENT_RETRIES


@task(name="read running version", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def running_version(topology: Topology, region: str) -> RunningVersion:
    """The version the region runs now, as its release target reports it."""
    return target_for(topology).current(region)


@task(name="deploy region", cache_policy=NO_CACHE)
def deploy_region(topology: Topology, region: str, version: str, ref: str | None = None) -> DeployResult:
    """Deploy ``version`` (or the exact previous ``ref``) to one region; the target's output goes to the logs."""
    result = target_for(topology).deploy(region, version, ref)
    if result.output.strip():
        get_run_logger().info("%s output:\n%s", result.sentence(), result.output.rstrip())
    return result


@task(name="wait until healthy", cache_policy=NO_CACHE)
def wait_healthy(
    topology: Topology, region: str, version: str, wave: int, needed: int, interval: float, timeout: float
) -> GateMeasurement:
    """The region runs ``version`` and passes ``needed`` health probes in a row (deadline ``timeout``)."""
    return health.wait_healthy(
        target_for(topology),
        prober_for(topology),
        region,
        topology.regions[region].app_url,
        version,
        wave=wave,
        needed=needed,
        interval=interval,
        timeout=timeout,
    )


@task(name="bake region", cache_policy=NO_CACHE)
def bake_region(
    topology: Topology, region: str, wave: int, limits: GateThresholds, seconds: float, interval: float
) -> GateMeasurement:
    """Watch the region's error rate and p95 from its metrics for ``seconds``; the first failure ends it."""
    with traffic_maker_for(topology) as traffic:
        return health.bake(
            metrics_source_for(topology),
            traffic,
            region,
            topology.regions[region].app_url,
            topology.app().release.probe_paths,
            limits,
            wave=wave,
            seconds=seconds,
            interval=interval,
        )


@task(name="publish assets", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def publish_assets(topology: Topology, region: str, files: list[AssetFile], dry_run: bool) -> BucketPublish:
    """Upload the version's changed assets to the region's bucket (content type, cache headers)."""
    return publish(
        objectstore_for(topology),
        region,
        topology.assets_bucket(region),
        files,
        topology.app().assets.cache_control,
        dry_run=dry_run,
    )


@task(name="invalidate CDN paths", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def invalidate_cdn(topology: Topology, paths: list[str]) -> Invalidation:
    """Invalidate the changed paths on the application's CDN distribution."""
    return cdn_for(topology).invalidate(topology.app().assets.cdn_distribution or "", paths)
