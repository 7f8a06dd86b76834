"""The topology's settings of the application: how it is released, its static assets, its traffic.

Part of :class:`regionops.topology.Topology`; import them from :mod:`regionops.topology`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from regionops.topology_base import Name, Strict


class CommandTargetSettings(Strict):
    """Release by running a command per region (``kubectl set image``, ``helm upgrade``, a deploy script).

    Placeholders, each shell-quoted when substituted: ``{region}``, ``{aws_region}``,
    ``{version}``, ``{application}``.
    """

    deploy: str = Field(description="command that deploys {version} to {region}")
    current_version: str | None = Field(
        None, description="command that prints the version running in {region}; default: the app's /version"
    )
    timeout_seconds: float = Field(600, gt=0, description="a deploy command running longer is killed")


class EcsTargetSettings(Strict):
    """Release to an ECS service per region: a new task definition revision with the version's image."""

    cluster: str = Field(description="ECS cluster name; may use {region}")
    service: str = Field(description="ECS service name; may use {region}")
    container: str = Field(description="container (in the task definition) whose image carries the version")
    image: str = Field(description="image reference with {version}, e.g. registry/app:{version}")
    stable_timeout_seconds: float = Field(900, gt=0, description="how long a service may take to become stable")


class ReleaseSettings(Strict):
    """How the application is released: which target, and its settings."""

    target: Literal["lab", "command", "ecs"] = Field("lab", description="release target kind")
    lab_dir: str | None = Field(None, description="lab target: the lab's directory")
    command: CommandTargetSettings | None = None
    ecs: EcsTargetSettings | None = None
    canary_region: str | None = Field(None, description="first wave of a release; default the first region")
    probe_paths: list[str] = Field(
        default_factory=lambda: ["/health"],
        description="paths each health probe requests (their answers feed the error-rate gate)",
    )


class AssetSettings(Strict):
    """Static assets: published to every region's bucket, fronted by a CDN."""

    source: str | None = Field(
        None, description="directory holding a version's assets, with {version}; none: no static assets"
    )
    prefix: str = Field("static/", description="key prefix in each bucket")
    buckets: dict[str, str] = Field(
        default_factory=dict, description="region -> assets bucket; default the region's bucket"
    )
    cache_control: str = Field("public, max-age=300", description="Cache-Control of every published object")
    cdn_distribution: str | None = Field(
        None, description="CloudFront distribution id (or its comment) whose changed paths are invalidated"
    )


class AppTraffic(Strict):
    """Geographic routing of the application: one latency-based record per region, each health-checked."""

    record: str = Field(description="the application's DNS name (latency records, one per region)")
    health_check_path: str = Field("/health", description="path Route53's health checks request")
    capacity_rps: dict[str, float] = Field(
        default_factory=dict, description="region -> requests/s it can serve (drain checks the others can)"
    )
    drain_on_database_loss: bool = Field(
        False, description="failover and DR drill drain the app traffic of a region whose database is lost"
    )


class Application(Strict):
    """The application the regions run: how it is released, its static assets, its traffic."""

    name: Name = "app"
    release: ReleaseSettings = ReleaseSettings()
    assets: AssetSettings = AssetSettings()
    traffic: AppTraffic | None = None
