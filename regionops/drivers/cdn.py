"""The CDN in front of the static asset buckets: CloudFront (moto's in the lab), through boto3.

A distribution is named in the topology by its id, or by its comment: the lab names
its distribution by comment because moto (like CloudFront) chooses the id.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from regionops.drivers.aws import service_client, translate_error
from regionops.errors import ExternalSystemError
from regionops.topology import Topology

log = logging.getLogger(__name__)
MAX_PATHS = 3000  # CloudFront's limit of paths in progress per distribution


class Invalidation(BaseModel):
    """One invalidation request."""

    distribution: str
    id: str
    status: str
    paths: list[str]

    def sentence(self) -> str:
        """One line for logs and reports."""
        return (
            f"invalidated {len(self.paths)} path(s) on CloudFront distribution {self.distribution} "
            f"(invalidation {self.id}, {self.status})"
        )


class Cdn(Protocol):
    """CDN operations the release needs."""

    def distribution_id(self, ref: str) -> str: ...
    def invalidate(self, ref: str, paths: list[str]) -> Invalidation: ...


class CloudFrontCdn:
    """Cdn over a boto3 CloudFront client."""

    def __init__(self, client: Any):
        self._client = client

    def _call(self, what: str, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, method)(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise translate_error(exc, f"CloudFront {what}") from exc

    def _distributions(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for page in self._client.get_paginator("list_distributions").paginate():
            items += page.get("DistributionList", {}).get("Items", []) or []
        return items

    def distribution_id(self, ref: str) -> str:
        """The id of the distribution whose id or comment is ``ref``."""
        try:
            found = [d["Id"] for d in self._distributions() if ref in (d["Id"], d.get("Comment"))]
        except (ClientError, BotoCoreError) as exc:
            raise translate_error(exc, "CloudFront list distributions") from exc
        if len(found) != 1:
            raise ExternalSystemError(
                f"CloudFront distribution {ref!r}: {'not found' if not found else f'{len(found)} match'}"
            )
        return found[0]

    def invalidate(self, ref: str, paths: list[str]) -> Invalidation:
        """Invalidate ``paths`` (each starting with /) on the distribution."""
        dist = self.distribution_id(ref)
        if len(paths) > MAX_PATHS:
            paths = ["/*"]  # more paths than one batch may hold: invalidating everything is the honest fallback
        reply = self._call(
            f"invalidation on {dist}",
            "create_invalidation",
            DistributionId=dist,
            InvalidationBatch={
                "Paths": {"Quantity": len(paths), "Items": paths},
                "CallerReference": f"regionops-{uuid.uuid4()}",
            },
        )
        inv = reply["Invalidation"]
        log.info("invalidation %s on %s: %d path(s)", inv["Id"], dist, len(paths))
        return Invalidation(distribution=dist, id=inv["Id"], status=inv.get("Status", ""), paths=paths)

    def invalidated_paths(self, ref: str) -> list[list[str]]:
        """The paths of every invalidation of the distribution (newest first as CloudFront lists them)."""
        dist = self.distribution_id(ref)
        summaries = (
            self._call(f"invalidations of {dist}", "list_invalidations", DistributionId=dist)
            .get("InvalidationList", {})
            .get("Items", [])
            or []
        )
        return [
            self._call(f"invalidation {s['Id']}", "get_invalidation", DistributionId=dist, Id=s["Id"])["Invalidation"][
                "InvalidationBatch"
            ]["Paths"].get("Items", [])
            for s in summaries
        ]

    def ensure_distribution(self, comment: str, origin_domain: str) -> str:
        """A distribution with ``comment`` in front of ``origin_domain`` (the lab's); returns its id."""
        for d in self._distributions():
            if d.get("Comment") == comment:
                return d["Id"]
        reply = self._call(
            f"distribution {comment}",
            "create_distribution",
            DistributionConfig={
                "CallerReference": comment,
                "Comment": comment,
                "Enabled": True,
                "Origins": {
                    "Quantity": 1,
                    "Items": [
                        {"Id": "assets", "DomainName": origin_domain, "S3OriginConfig": {"OriginAccessIdentity": ""}}
                    ],
                },
                "DefaultCacheBehavior": {
                    "TargetOriginId": "assets",
                    "ViewerProtocolPolicy": "redirect-to-https",
                    "MinTTL": 0,
                    "ForwardedValues": {"QueryString": False, "Cookies": {"Forward": "none"}},
                    "TrustedSigners": {"Enabled": False, "Quantity": 0},
                },
            },
        )
        return reply["Distribution"]["Id"]


def cdn_for(topology: Topology) -> CloudFrontCdn:
    """The CloudFront driver of ``topology`` (CloudFront's API lives in us-east-1)."""
    return CloudFrontCdn(service_client(topology, "cloudfront", "us-east-1"))
