"""pgBackRest, the backup engine: configuration from the topology, commands through an injected runner.

- **Configuration** (:mod:`regionops.drivers.pgbackrest_config`): one stanza per cluster,
  one repository per bucket its residency allows, one file per node.
- **Commands** (stanza-create, check, backup, info, verify, restore, expire) are argv
  lists run by a :class:`Runner` on the node's machine as the cluster's OS user:
  :class:`LocalRunner` here, the node seam (a worker in the node's region) in
  production.  A failed command is a project error that carries pgBackRest's message.
- **Results** (:mod:`regionops.drivers.pgbackrest_info`): typed, and ``pgbackrest info`` parsed.

This module runs the commands; it re-exports the other two, so callers import one name.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# The configuration and the results live beside this module; callers keep one import.
from regionops.drivers.pgbackrest_config import (  # noqa: F401
    BINARY,
    PACKAGE,
    BackupType,
    Repository,
    StanzaPlan,
    TargetType,
    archive_settings,
    binary,
    plan_stanza,
    render_config,
    write_config,
)
from regionops.drivers.pgbackrest_info import (  # noqa: F401
    BackupInfo,
    BackupResult,
    CommandResult,
    RepoStatus,
    RestoreResult,
    StanzaInfo,
    VerifyResult,
    parse_info,
)
from regionops.errors import (
    ConfigurationError,
    DeadlineExceeded,
    ExternalSystemError,
    PreconditionFailed,
    RunbookError,
    TransientError,
    VerificationFailed,
)
from regionops.topology import Topology
from regionops.waiting import poll_until

# pgBackRest error codes (its ``ERROR: [NNN]:`` lines) that name a condition which passes on
# its own (a lock held by another run, an archive or host timeout): worth a retry.
_TRANSIENT_CODES = frozenset({39, 50, 57, 82})  # HostConnect, LockAcquire, ProtocolTimeout, ArchiveTimeout
_CONFIG_CODES = frozenset({31, 32, 37, 38})  # OptionInvalid, OptionInvalidValue, OptionRequired, ...
_PRECONDITION_CODES = frozenset({55, 73, 75})  # FileMissing, PathMissing-like: stanza/backup not there


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
