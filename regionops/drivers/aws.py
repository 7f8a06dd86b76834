"""The one boto3 seam: building S3 and Route53 clients from the topology, translating errors.

Clients get short connect timeouts and a small retry budget: a runbook would rather
fail fast with a :class:`TransientError` (which its own retry policy handles) than
hang inside botocore.  ``Topology.aws.endpoint_url`` points every client at an
S3/Route53-compatible server such as moto in the lab, and ``Topology.aws.ca_bundle``
names the CA it trusts (the lab's own CA: the lab serves S3 over TLS).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, IncompleteReadError
from botocore.exceptions import ConnectionError as BotoConnectionError

from regionops.errors import ConfigurationError, ExternalSystemError, RunbookError, TransientError
from regionops.topology import Topology

log = logging.getLogger(__name__)

# Route53 is global and S3 needs *some* signing region when none is configured.
DEFAULT_REGION = "us-east-1"
DUMMY_CREDENTIAL = "regionops"

# Codes that name a condition which passes on its own; botocore already retried them.
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "PriorRequestNotComplete",
        "RequestLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
    }
)


def _config(**extra: Any) -> Config:
    # A 2 s connect timeout: an endpoint that does not accept a TCP connection in 2 s is
    # gone (a lost or cut-off region), and a runbook on the critical path should hear so in
    # seconds, not after 3 x 5 s per call (a connection, once made, has the read timeout).
    return Config(
        connect_timeout=2,
        read_timeout=60,
        retries={"mode": "standard", "total_max_attempts": 3},
        **extra,
    )


def _credentials(topology: Topology) -> dict[str, str]:
    """Explicit credentials for the client, or {} to let boto3's default chain decide."""
    aws = topology.aws
    if bool(aws.access_key_id) != bool(aws.secret_access_key):
        raise ConfigurationError("aws.access_key_id and aws.secret_access_key must be given together")
    if aws.access_key_id and aws.secret_access_key:
        return {
            "aws_access_key_id": aws.access_key_id.resolve(),
            "aws_secret_access_key": aws.secret_access_key.resolve(),
        }
    if aws.endpoint_url:
        # moto (the lab) accepts any credentials, but botocore refuses to sign without some.
        return {"aws_access_key_id": DUMMY_CREDENTIAL, "aws_secret_access_key": DUMMY_CREDENTIAL}
    return {}


# Clients by everything that configures them.  A boto3 client is thread-safe and costs
# 0.1-0.4 s to build (its service model is read from disk, a TLS session opened); a runbook
# builds a handful on a failover's critical path, so one per configuration per process.
_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()


def _client(
    topology: Topology, service: str, aws_region: str, extra: dict[str, Any] | None = None, endpoint: str | None = None
) -> Any:
    """The process's boto3 client for ``service`` in ``aws_region``, for ``endpoint`` (default the
    topology's), credentials and CA bundle (built once, then shared)."""
    aws = topology.aws
    endpoint = endpoint or aws.endpoint_url
    credentials = _credentials(topology)
    key = (service, aws_region, endpoint, aws.ca_bundle, tuple(sorted(credentials.items())), repr(extra))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = _session().client(
                service,
                region_name=aws_region,
                endpoint_url=endpoint,
                config=_config(**(extra or {})),
                verify=aws.ca_bundle if aws.ca_bundle else None,
                **credentials,
            )
        return client


def _session() -> boto3.session.Session:
    # A fresh Session per client: boto3's default session is not safe to share across
    # the threads Prefect runs tasks in (the clients it builds are).
    return boto3.session.Session()


def s3_client(topology: Topology, aws_region: str | None = None) -> Any:
    """An S3 client for ``aws_region`` (or the configured default region)."""
    extra: dict[str, Any] = {}
    if topology.aws.endpoint_url:
        # Custom endpoints rarely have wildcard DNS for virtual-hosted buckets, and some
        # S3-compatible servers reject the newer default request checksums.
        extra = {
            "s3": {"addressing_style": "path"},
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
        }
    region = aws_region or _default_region()
    return _client(topology, "s3", region, extra, endpoint=topology.aws.s3_endpoint(region))


def _default_region() -> str:
    return _session().region_name or DEFAULT_REGION


def route53_client(topology: Topology) -> Any:
    """A Route53 client (Route53 is a global service; its API lives in us-east-1)."""
    return _client(topology, "route53", DEFAULT_REGION)


def service_client(topology: Topology, service: str, aws_region: str | None = None) -> Any:
    """A boto3 client for ``service`` (ECS, CloudFront, ...) configured like the S3 and Route53 ones."""
    return _client(topology, service, aws_region or DEFAULT_REGION)


def error_code(exc: BaseException | None) -> str:
    """The AWS error code of a ClientError ('' for anything else, None included: an error without a cause)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def translate_error(exc: BaseException, what: str) -> RunbookError:
    """The project error for a botocore error, its message starting with ``what``.

    Connection problems, timeouts, throttling and 5xx answers become TransientError;
    everything else ExternalSystemError.  Use as ``raise translate_error(exc, what) from exc``.
    """
    if isinstance(exc, (BotoConnectionError, HTTPClientError, IncompleteReadError)):
        return TransientError(f"{what}: {exc}")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        message = f"{what}: {error.get('Code', 'error')}: {error.get('Message') or 'HTTP ' + str(status)}"
        if error.get("Code") in _TRANSIENT_CODES or status >= 500:
            return TransientError(message)
        return ExternalSystemError(message)
    if isinstance(exc, BotoCoreError):
        return ExternalSystemError(f"{what}: {exc}")
    return ExternalSystemError(f"{what}: {type(exc).__name__}: {exc}")
