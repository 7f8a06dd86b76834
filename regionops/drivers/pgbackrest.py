"""pgBackRest, the backup engine: configuration from the topology, commands through an injected runner.

- **Configuration**: one stanza per cluster (named after it) and **one repository per
  allowed bucket**: the home region's bucket is ``repo1``; each ``backup.copy_to`` region
  adds one more, and a region outside the cluster's residency is refused (with the
  rule) when the plan is made, before any pgBackRest command can run.  Each node has its
  own file (``<config_dir>/<cluster>-<node>.conf``: its pg1-path, port and socket), as in
  production where each node is a host.  Secrets are referenced in the topology and
  resolved only into that 0600 file, owned by the cluster's OS user.
- **Commands** (stanza-create, check, backup, info, verify, restore, expire) are argv
  lists run by a :class:`Runner` on the node's machine as the cluster's OS user:
  :class:`LocalRunner` here, the node seam (a worker in the node's region) in
  production.  A failed command is a project error that carries pgBackRest's message.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from regionops.backup.residency import check_all
from regionops.errors import (
    ConfigurationError,
    DeadlineExceeded,
    ExternalSystemError,
    PreconditionFailed,
    RunbookError,
    TransientError,
    VerificationFailed,
)
from regionops.topology import PgBackRestSettings, Topology, home_region
from regionops.waiting import poll_until

PACKAGE = "pgbackrest"  # the Debian package (2.45 tested)
BINARY = "pgbackrest"
BackupType = Literal["full", "diff", "incr"]
TargetType = Literal["time", "lsn", "name", "immediate", "default"]

# pgBackRest error codes (its ``ERROR: [NNN]:`` lines) that name a condition which passes on
# its own (a lock held by another run, an archive or host timeout): worth a retry.
_TRANSIENT_CODES = frozenset({39, 50, 57, 82})  # HostConnect, LockAcquire, ProtocolTimeout, ArchiveTimeout
_CONFIG_CODES = frozenset({31, 32, 37, 38})  # OptionInvalid, OptionInvalidValue, OptionRequired, ...
_PRECONDITION_CODES = frozenset({55, 73, 75})  # FileMissing, PathMissing-like: stanza/backup not there


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
    url = topology.aws.endpoint_url
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


# -- running commands ----------------------------------------------------------------------
@dataclass(frozen=True)
class RunOutput:
    """What one command did: exit code, its two streams, how long it took."""

    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str
    seconds: float


class Runner(Protocol):
    """Runs a pgBackRest argv on the node's machine as the cluster's OS user (the node seam carries it)."""

    def __call__(self, argv: Sequence[str], *, timeout: float) -> RunOutput: ...


class LocalRunner:
    """Runs commands on this machine, as ``os_user`` when we are root (``runuser``)."""

    def __init__(self, os_user: str | None = None):
        self.os_user = os_user

    def __call__(self, argv: Sequence[str], *, timeout: float) -> RunOutput:
        from regionops.drivers.pgtools import as_user

        started = time.monotonic()
        # Its own process group: on a timeout, pgbackrest and the processes it started go
        # too, not only runuser (a left-over backup would hold the stanza's lock).
        proc = subprocess.Popen(
            as_user(argv, self.os_user), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/", start_new_session=True
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            raise TransientError(f"pgbackrest {_command_of(argv)} did not finish within {timeout:g}s") from exc
        return RunOutput(
            tuple(argv),
            proc.returncode,
            stdout.decode(errors="replace"),
            stderr.decode(errors="replace"),
            time.monotonic() - started,
        )


def _command_of(argv: Sequence[str]) -> str:
    return next((a for a in argv[1:] if not a.startswith("-")), "?")


def pgbackrest_error(out: RunOutput) -> RunbookError:
    """The project error for a failed command, carrying pgBackRest's own ERROR line(s)."""
    lines = [ln.strip() for ln in (out.stderr + "\n" + out.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "ERROR:" in ln] or lines[-3:]
    message = f"pgbackrest {_command_of(out.argv)} exited {out.exit_code}: " + " | ".join(errors)
    code = out.exit_code
    if code in _TRANSIENT_CODES:
        return TransientError(message)
    if code in _CONFIG_CODES:
        return ConfigurationError(message)
    if code in _PRECONDITION_CODES:
        return PreconditionFailed(message)
    return ExternalSystemError(message)


# -- typed results -------------------------------------------------------------------------
class CommandResult(BaseModel):
    """A command that succeeded (stanza-create, check, expire)."""

    command: str
    stanza: str
    node: str
    seconds: float
    detail: str = ""

    def sentence(self) -> str:
        extra = f": {self.detail}" if self.detail else ""
        return f"pgbackrest {self.command} of stanza {self.stanza} on {self.node} in {self.seconds:.1f} s{extra}"


class BackupInfo(BaseModel):
    """One backup in one repository, from ``info --output=json``."""

    label: str
    type: str
    repo: int
    started: datetime
    stopped: datetime
    size: int = Field(description="database size in bytes")
    repo_size: int = Field(description="bytes stored in the repository")
    delta: int = Field(0, description="bytes of the database this backup copied (all of it for a full)")
    wal_start: str | None = None
    wal_stop: str | None = None
    lsn_start: str | None = None
    lsn_stop: str | None = None
    prior: str | None = None
    error: bool = False

    def sentence(self) -> str:
        return (
            f"{self.type} backup {self.label} in repo{self.repo}, {self.size} bytes ({self.repo_size} stored), "
            f"taken {self.started:%Y-%m-%d %H:%M:%S}Z-{self.stopped:%H:%M:%S}Z"
        )


class RepoStatus(BaseModel):
    """One repository's status in ``info``."""

    repo: int
    ok: bool
    message: str


class StanzaInfo(BaseModel):
    """``info --output=json`` for one stanza: its backups (oldest first) and WAL archive range per repo."""

    stanza: str
    ok: bool
    status: str
    backups: list[BackupInfo]
    repos: list[RepoStatus]
    archive_min: str | None = None
    archive_max: str | None = None

    def newest(self, repo: int | None = None) -> BackupInfo | None:
        """The newest good backup (of ``repo`` when given)."""
        good = [b for b in self.backups if not b.error and (repo is None or b.repo == repo)]
        return good[-1] if good else None

    def sentence(self) -> str:
        newest = self.newest()
        tail = f"; newest: {newest.sentence()}" if newest else "; no backup yet"
        wal = f"; WAL {self.archive_min}..{self.archive_max}" if self.archive_max else ""
        return f"stanza {self.stanza} {self.status}: {len(self.backups)} backup(s){wal}{tail}"


class BackupResult(BaseModel):
    """A finished backup."""

    node: str
    repo: int
    type: str
    label: str | None = Field(None, description="pgBackRest's label, e.g. 20261124-225513F")
    seconds: float
    backup: BackupInfo | None = Field(None, description="its info entry, when asked for (describe=True)")

    def sentence(self) -> str:
        what = self.backup.sentence() if self.backup else f"{self.type} backup {self.label or ''} in repo{self.repo}"
        return f"{what}; taken from {self.node} in {self.seconds:.1f} s"


class VerifyResult(BaseModel):
    """``verify``: the repository's backups and WAL are readable and match their checksums."""

    repo: int
    ok: bool
    seconds: float
    problems: list[str] = []

    def sentence(self) -> str:
        if self.ok:
            return f"repo{self.repo} verified in {self.seconds:.1f} s: every backup and WAL file checks out"
        return f"repo{self.repo} verification found {len(self.problems)} problem(s): " + "; ".join(self.problems)


class RestoreResult(BaseModel):
    """A restore into a directory (not started)."""

    directory: str
    target: str
    repo: int
    backup_set: str | None
    seconds: float

    def sentence(self) -> str:
        source = f"backup {self.backup_set}" if self.backup_set else "the newest backup"
        return (
            f"restored {source} from repo{self.repo} into {self.directory}, recovering to {self.target}, "
            f"in {self.seconds:.1f} s"
        )


def _lsn_pair(value: dict | None) -> tuple[str | None, str | None]:
    return (value or {}).get("start"), (value or {}).get("stop")


def parse_info(text: str, stanza: str) -> StanzaInfo:
    """The typed form of ``pgbackrest info --output=json`` for ``stanza``."""
    try:
        docs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExternalSystemError(f"pgbackrest info printed no JSON: {text[:200]!r}") from exc
    doc = next((d for d in docs if d.get("name") == stanza), None)
    if doc is None:
        raise PreconditionFailed(f"pgbackrest info knows no stanza {stanza!r}")
    backups = []
    for b in doc.get("backup", []):
        wal_start, wal_stop = _lsn_pair(b.get("archive"))
        lsn_start, lsn_stop = _lsn_pair(b.get("lsn"))
        backups.append(
            BackupInfo(
                label=b["label"],
                type=b["type"],
                repo=int(b.get("database", {}).get("repo-key", 1)),
                started=datetime.fromtimestamp(b["timestamp"]["start"], UTC),
                stopped=datetime.fromtimestamp(b["timestamp"]["stop"], UTC),
                size=int(b.get("info", {}).get("size", 0)),
                repo_size=int(b.get("info", {}).get("repository", {}).get("size", 0)),
                delta=int(b.get("info", {}).get("delta", 0)),
                wal_start=wal_start,
                wal_stop=wal_stop,
                lsn_start=lsn_start,
                lsn_stop=lsn_stop,
                prior=b.get("prior"),
                error=bool(b.get("error", False)),
            )
        )
    backups.sort(key=lambda b: (b.stopped, b.label))
    archives = doc.get("archive", [])
    status = doc.get("status", {})
    repos = [
        RepoStatus(
            repo=int(r["key"]), ok=r.get("status", {}).get("code") == 0, message=r.get("status", {}).get("message", "")
        )
        for r in doc.get("repo", [])
    ]
    return StanzaInfo(
        stanza=stanza,
        ok=status.get("code") == 0,
        status=status.get("message", "unknown"),
        backups=backups,
        repos=repos,
        archive_min=min((a["min"] for a in archives if a.get("min")), default=None),
        archive_max=max((a["max"] for a in archives if a.get("max")), default=None),
    )


# -- the driver ----------------------------------------------------------------------------
class PgBackRest:
    """pgBackRest commands for one node of one cluster, run through ``runner`` with the node's configuration."""

    def __init__(self, plan: StanzaPlan, node: str, runner: Runner, binary_path: str | None = None):
        self.plan = plan
        self.node = node
        self.runner = runner
        self.binary = binary_path or binary()

    @classmethod
    def for_node(cls, topology: Topology, cluster: str, node: str, runner: Runner | None = None) -> PgBackRest:
        """The driver for ``node``: the plan is made (residency checked) before anything can run."""
        plan = plan_stanza(topology, cluster)
        topology.node(plan.cluster, node)  # unknown node: a TopologyError naming it
        _, spec = topology.cluster(plan.cluster)
        return cls(plan, node, runner or LocalRunner(spec.os_user))

    def prefix(self) -> list[str]:
        """What every command line starts with: the binary, the node's config, the stanza."""
        return [self.binary, f"--config={self.plan.config_path(self.node)}", f"--stanza={self.plan.cluster}"]

    def argv(self, command: str, *options: str) -> list[str]:
        """The full command line: binary, the node's config, the stanza, the command, its options."""
        return [*self.prefix(), *options, command]

    def run(self, command: str, *options: str, timeout: float = 3600) -> RunOutput:
        """Run one command; a non-zero exit is the project error carrying pgBackRest's message."""
        out = self.runner(self.argv(command, *options), timeout=timeout)
        if out.exit_code != 0:
            raise pgbackrest_error(out)
        return out

    def _result(self, command: str, out: RunOutput, detail: str = "") -> CommandResult:
        return CommandResult(
            command=command, stanza=self.plan.cluster, node=self.node, seconds=out.seconds, detail=detail
        )

    def stanza_create(self, timeout: float = 300, lock_wait: float = 60) -> CommandResult:
        """Create the stanza in every repository (idempotent: an existing, matching stanza is fine).

        Until the stanza exists, PostgreSQL's archiver keeps trying archive-push, whose
        asynchronous process holds the archive lock for a moment: a lock conflict is
        retried for up to ``lock_wait`` seconds.
        """
        last: list[TransientError] = []

        def attempt() -> RunOutput | None:
            try:
                return self.run("stanza-create", timeout=timeout)
            except TransientError as exc:
                if "unable to acquire lock" not in str(exc):
                    raise
                last[:] = [exc]
                return None

        try:
            out = poll_until(attempt, timeout=lock_wait, interval=0.5, what="the pgBackRest archive lock")
        except DeadlineExceeded as exc:
            raise (last[0] if last else exc) from exc
        count = len(self.plan.repositories)
        return self._result("stanza-create", out, f"{count} repositor{'y' if count == 1 else 'ies'}")

    def check(self, timeout: float = 300) -> CommandResult:
        """Check the configuration and that WAL reaches every repository (run on the primary)."""
        return self._result("check", self.run("check", timeout=timeout), "WAL archiving reaches every repository")

    def backup(
        self, backup_type: BackupType = "full", repo: int = 1, *, describe: bool = False, timeout: float = 6 * 3600
    ) -> BackupResult:
        """Take a ``full``, ``diff`` or ``incr`` backup into repository ``repo``.

        The label comes from pgBackRest's own log line; ``describe`` also reads ``info``
        for its sizes and WAL range (about a second against S3: a runbook asks once).
        """
        if backup_type not in ("full", "diff", "incr"):
            raise ConfigurationError(f"backup type {backup_type!r}: use full, diff or incr")
        self._repo(repo)
        out = self.run("backup", f"--type={backup_type}", f"--repo={repo}", "--log-level-console=info", timeout=timeout)
        found = re.search(r"new backup label = (\S+)", out.stdout + out.stderr)
        label = found.group(1) if found else None
        info = None
        if describe:
            info = next((b for b in self.info(repo=repo).backups if b.label == label), None)
        return BackupResult(node=self.node, repo=repo, type=backup_type, label=label, seconds=out.seconds, backup=info)

    def info(self, repo: int | None = None, timeout: float = 300) -> StanzaInfo:
        """The stanza's backups and WAL archive, typed."""
        options = ["--output=json", *([f"--repo={repo}"] if repo else [])]
        return parse_info(self.run("info", *options, timeout=timeout).stdout, self.plan.cluster)

    def verify(self, repo: int = 1, timeout: float = 6 * 3600, process_max: int | None = None) -> VerifyResult:
        """Verify repository ``repo``; a corrupt or missing object is a VerificationFailed naming it.

        ``process_max`` overrides the configured parallelism: verify reads every file of
        every backup (one request each, even when bundled), so it is bound by the object
        store's latency per request rather than by CPU.
        """
        self._repo(repo)
        # verify names each bad file only in its INFO log lines ("invalid result <file>: ...").
        # No job retries: a corrupt file fails the same way again, after a 15 s back-off each.
        parallel = [f"--process-max={process_max}"] if process_max else []
        out = self.runner(
            self.argv(
                "verify",
                f"--repo={repo}",
                "--verbose",
                "--output=text",
                "--log-level-console=info",
                "--job-retry=0",
                *parallel,
            ),
            timeout=timeout,
        )
        problems = _verify_problems(out)
        if out.exit_code != 0 or problems:
            result = VerifyResult(
                repo=repo, ok=False, seconds=out.seconds, problems=problems or [pgbackrest_error(out).args[0]]
            )
            raise VerificationFailed(f"stanza {self.plan.cluster}: {result.sentence()}")
        return VerifyResult(repo=repo, ok=True, seconds=out.seconds)

    def restore(
        self,
        directory: Path,
        *,
        target_type: TargetType = "default",
        target: str | None = None,
        repo: int = 1,
        backup_set: str | None = None,
        target_action: str = "promote",
        extra_options: Sequence[str] = (),
        timeout: float = 6 * 3600,
    ) -> RestoreResult:
        """Restore into ``directory`` (must be empty) recovering to a target, then ``target_action``.

        ``target_type``: ``time`` (``2026-11-24 14:04:00+00``), ``lsn``, ``name`` (a restore
        point), ``immediate`` (the backup's end) or ``default`` (the end of the archive).
        """
        if target_type in ("time", "lsn", "name") and not target:
            raise ConfigurationError(f"a {target_type} restore needs a target")
        if target_type not in ("time", "lsn", "name", "immediate", "default"):
            raise ConfigurationError(f"restore target type {target_type!r}: use time, lsn, name, immediate or default")
        self._repo(repo)
        if directory.exists() and any(directory.iterdir()):
            raise PreconditionFailed(f"{directory} is not empty; a restore never writes into a used directory")
        options = [
            f"--pg1-path={directory}",
            f"--repo={repo}",
            f"--type={target_type}",
            "--archive-mode=off",
            *extra_options,
        ]
        if target:
            options += [f"--target={target}"]
        if target_type != "default":
            options += [f"--target-action={target_action}"]
        if backup_set:
            options += [f"--set={backup_set}"]
        out = self.run("restore", *options, timeout=timeout)
        described = (
            f"{target_type} {target}"
            if target
            else ("the backup's end" if target_type == "immediate" else "the end of the WAL archive")
        )
        return RestoreResult(
            directory=str(directory), target=described, repo=repo, backup_set=backup_set, seconds=out.seconds
        )

    def expire(self, repo: int | None = None, timeout: float = 3600) -> CommandResult:
        """Apply each repository's retention (or ``repo``'s only)."""
        options = [f"--repo={repo}"] if repo else []
        return self._result("expire", self.run("expire", *options, timeout=timeout), "retention applied")

    def _repo(self, repo: int) -> None:
        if not any(r.index == repo for r in self.plan.repositories):
            raise ConfigurationError(
                f"stanza {self.plan.cluster} has no repo{repo}; repositories: "
                + ", ".join(f"repo{r.index}" for r in self.plan.repositories)
            )


def _verify_problems(out: RunOutput) -> list[str]:
    """Each file verify found bad (``invalid result <file>: <why>``), or its error status when none is named."""
    text = out.stdout + "\n" + out.stderr
    named = [m.group(1).strip() for m in re.finditer(r"INFO: (invalid \S+ .*?)(?:\n\s*\[|$)", text, re.M)]
    if named:
        return named
    return (
        [
            "status: error ("
            + " ".join(ln.strip() for ln in text.splitlines() if "invalid" in ln or "missing:" in ln)
            + ")"
        ]
        if re.search(r"^\s*status: error", text, re.M)
        else []
    )


# -- restoring into a directory of our own (restore verification, a node's staging copy) --
RESTORE_NODE = "restore"  # the driver's node name for such a configuration: <work_dir>/<cluster>-restore.conf


def restore_driver(
    topology: Topology, cluster_name: str, data_dir: Path, work_dir: Path, runner: Runner | None = None
) -> PgBackRest:
    """A driver on this machine whose configuration restores into ``data_dir`` (its pg1-path).

    The stanza's repositories as every node has them, but the file, spool, lock and log
    directories live in ``work_dir``: a restore never shares a lock or an archive-get
    queue with a node archiving on the same host.  The restored instance's
    restore_command names this file, so ``work_dir`` lives as long as that instance.
    Node-local: run it where the directory is (a node's worker for a staging copy).
    """
    from regionops.drivers.pgtools import chown_to

    base = plan_stanza(topology, cluster_name)
    _, cluster = topology.cluster(base.cluster)
    settings = base.settings.model_copy(
        update={
            "config_dir": str(work_dir),
            "spool_dir": str(work_dir / "spool"),
            "lock_dir": str(work_dir / "lock"),
            "log_dir": str(work_dir / "log"),
            "archive_async": False,
        }
    )
    plan = base.model_copy(update={"settings": settings})
    text = render_config(topology, plan, next(iter(cluster.nodes)))
    head = text.split(f"\n[{plan.cluster}]\n", 1)[0]
    body = f"{head}\n[{plan.cluster}]\npg1-path={data_dir}\npg1-user={cluster.user}\n"
    for directory in (work_dir, work_dir / "lock", work_dir / "log"):
        directory.mkdir(parents=True, exist_ok=True)
        chown_to(directory, cluster.os_user)
    path = plan.config_path(RESTORE_NODE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(body)
    chown_to(path, cluster.os_user)
    return PgBackRest(plan, RESTORE_NODE, runner or LocalRunner(cluster.os_user))
