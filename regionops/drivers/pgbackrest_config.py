"""pgBackRest's configuration from the topology: the stanza plan, one repository per allowed bucket, each node's file.

One stanza per cluster (named after it) and **one repository per allowed bucket**: the
home region's bucket is ``repo1``; each ``backup.copy_to`` region adds one more, and a
region outside the cluster's residency is refused (with the rule) when the plan is
made, before any pgBackRest command can run.  Each node has its own file
(``<config_dir>/<cluster>-<node>.conf``: its pg1-path, port and socket), as in
production where each node is a host.  Secrets are referenced in the topology and
resolved only into that 0600 file, owned by the cluster's OS user.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from regionops.decisions.residency import check_all
from regionops.errors import (
    ConfigurationError,
)
from regionops.topology import PgBackRestSettings, Topology, home_region

PACKAGE = "pgbackrest"  # the Debian package (2.45 tested)
BINARY = "pgbackrest"
BackupType = Literal["full", "diff", "incr"]
TargetType = Literal["time", "lsn", "name", "immediate", "default"]


def binary() -> str:
    """The pgbackrest executable, or a ConfigurationError naming the package that provides it."""
    path = shutil.which(BINARY)
    if not path:
        raise ConfigurationError(
            f"pgBackRest is not installed: no {BINARY} on PATH (Debian: apt-get install {PACKAGE}; "
            "`make monitoring-tools`, which `make demo` and `make test` run, installs it when run as root)"
        )
    return path


# -- configuration -------------------------------------------------------------------------
class Repository(BaseModel):
    """One pgBackRest repository: a bucket that the cluster's residency allows."""

    index: int = Field(description="pgBackRest's repo number: 1 is the home bucket")
    region: str
    aws_region: str
    bucket: str
    path: str
    retention_full: int
    retention_diff: int

    def sentence(self) -> str:
        """``repo1: s3://regionops-lab-eu/pgbackrest (eu, keep 2 full, 7 diff)``."""
        return (
            f"repo{self.index}: s3://{self.bucket}{self.path} ({self.region}, keep {self.retention_full} full, "
            f"{self.retention_diff} diff)"
        )


class StanzaPlan(BaseModel):
    """Everything needed to configure pgBackRest for one cluster, secrets still as references."""

    cluster: str
    repositories: list[Repository]
    settings: PgBackRestSettings

    def config_path(self, node: str) -> Path:
        """The node's configuration file (on the node's machine)."""
        return Path(self.settings.config_dir) / f"{self.cluster}-{node}.conf"

    def spool_path(self, node: str) -> Path:
        """The node's asynchronous archiving queue."""
        return Path(self.settings.spool_dir) / f"{self.cluster}-{node}"

    def repository(self, region: str) -> Repository:
        """The repository in ``region``'s bucket (ConfigurationError when the plan has none)."""
        for repo in self.repositories:
            if repo.region == region:
                return repo
        raise ConfigurationError(
            f"cluster {self.cluster} has no pgBackRest repository in region {region!r}; "
            f"repositories: {', '.join(r.region for r in self.repositories)}"
        )

    def sentence(self) -> str:
        return f"stanza {self.cluster}: " + "; ".join(r.sentence() for r in self.repositories)


def plan_stanza(topology: Topology, cluster_name: str) -> StanzaPlan:
    """The stanza and repositories of ``cluster_name``: home bucket first, then each allowed copy target.

    Every region is checked against the cluster's residency before the plan exists, so a
    copy target outside it is a ResidencyViolation naming the rule, and no command runs.
    """
    name, cluster = topology.cluster(cluster_name)
    settings = cluster.backup.pgbackrest
    regions = list(dict.fromkeys([home_region(cluster), *cluster.backup.copy_to]))
    check_all(topology, name, regions, "pgBackRest repository")
    repos = []
    for index, region_name in enumerate(regions, 1):
        region = topology.regions[region_name]
        full = settings.retention_full if index == 1 else (settings.copy_retention_full or settings.retention_full)
        repos.append(
            Repository(
                index=index,
                region=region_name,
                aws_region=region.aws_region,
                bucket=region.bucket,
                path=settings.repo_path,
                retention_full=full,
                retention_diff=settings.retention_diff,
            )
        )
    return StanzaPlan(cluster=name, repositories=repos, settings=settings)


def _s3_endpoint(topology: Topology, aws_region: str) -> tuple[str, int | None]:
    """pgBackRest's repo-s3-endpoint (a host) and repo-storage-port for a region."""
    url = topology.aws.s3_endpoint(aws_region)
    if not url:
        return f"s3.{aws_region}.amazonaws.com", None
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise ConfigurationError(f"aws.endpoint_url {url}: pgBackRest reaches S3 only over https")
    return parts.hostname or "", parts.port


def render_config(topology: Topology, plan: StanzaPlan, node: str) -> str:
    """The node's pgbackrest.conf text, secrets resolved (write it only with :func:`write_config`)."""
    _, cluster = topology.cluster(plan.cluster)
    spec = topology.node(plan.cluster, node)
    s = plan.settings
    glob: dict[str, str] = {
        "compress-type": s.compress_type,
        "process-max": str(s.process_max),
        "archive-async": "y" if s.archive_async else "n",
        "spool-path": str(plan.spool_path(node)),
        "lock-path": s.lock_dir,
        "log-path": s.log_dir,
        "log-level-console": "off",  # stdout carries only --output=json; errors go to stderr
        "log-level-stderr": "warn",
        "log-level-file": "info",
        "start-fast": "y",
        "archive-timeout": "60",
    }
    aws = topology.aws
    if bool(aws.access_key_id) != bool(aws.secret_access_key):
        raise ConfigurationError("aws.access_key_id and aws.secret_access_key must be given together")
    for repo in plan.repositories:
        p = f"repo{repo.index}-"
        host, port = _s3_endpoint(topology, repo.aws_region)
        glob |= {
            p + "type": "s3",
            p + "path": repo.path,
            p + "s3-bucket": repo.bucket,
            p + "s3-region": repo.aws_region,
            p + "s3-endpoint": host,
            p + "retention-full": str(repo.retention_full),
            p + "retention-diff": str(repo.retention_diff),
            p + "bundle": "y" if s.bundle else "n",
        }
        if port:
            glob[p + "storage-port"] = str(port)
        if aws.endpoint_url:
            glob[p + "s3-uri-style"] = "path"  # S3-compatible servers (moto) rarely have bucket subdomains
        if aws.ca_bundle:
            glob[p + "storage-ca-file"] = aws.ca_bundle
        if aws.access_key_id and aws.secret_access_key:
            glob[p + "s3-key"] = aws.access_key_id.resolve()
            glob[p + "s3-key-secret"] = aws.secret_access_key.resolve()
        elif aws.endpoint_url:
            glob[p + "s3-key"] = glob[p + "s3-key-secret"] = "regionops"  # moto takes any credentials
        else:
            glob[p + "s3-key-type"] = "auto"  # the instance's IAM role
        if s.cipher_passphrase:
            glob[p + "cipher-type"] = "aes-256-cbc"
            glob[p + "cipher-pass"] = s.cipher_passphrase.resolve()
    stanza = {
        "pg1-path": spec.data_dir,
        "pg1-port": str(spec.port),
        "pg1-socket-path": s.socket_dir,
        "pg1-user": cluster.user,
    }
    lines = ["# written by regionops from the topology; holds secrets (mode 0600)", "[global]"]
    lines += [f"{k}={v}" for k, v in glob.items()]
    lines += ["", f"[{plan.cluster}]"] + [f"{k}={v}" for k, v in stanza.items()]
    return "\n".join(lines) + "\n"


def write_config(topology: Topology, plan: StanzaPlan, node: str) -> Path:
    """Write the node's configuration file (0600, owned by the cluster's OS user when root); node-local."""
    from regionops.drivers.pgtools import chown_to  # pg tools own the OS-user rule

    _, cluster = topology.cluster(plan.cluster)
    path = plan.config_path(node)
    text = render_config(topology, plan, node)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    chown_to(tmp, cluster.os_user)
    os.replace(tmp, path)
    s = plan.settings
    for directory in (plan.spool_path(node), Path(s.lock_dir), Path(s.log_dir)):
        directory.mkdir(parents=True, exist_ok=True)
        chown_to(directory, cluster.os_user)
    return path


def archive_settings(plan: StanzaPlan, node: str, binary_path: str = BINARY) -> dict[str, str]:
    """PostgreSQL settings that archive every WAL segment of ``node`` through pgBackRest (async)."""
    command = f"{binary_path} --config={plan.config_path(node)} --stanza={plan.cluster} archive-push %p"
    return {
        "archive_mode": "on",
        "archive_command": "'" + command.replace("'", "''") + "'",
        "unix_socket_directories": "'" + plan.settings.socket_dir.replace("'", "''") + "'",
    }
