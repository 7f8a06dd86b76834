"""PostgreSQL's command-line tools: initdb, pg_ctl, pg_basebackup, pg_rewind, pg_verifybackup.

PostgreSQL refuses to run as root, so when this process is root and an OS user is
given, every tool runs as that user (``runuser``).  Failures become project errors that
carry the tool's own last lines of output.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from regionops.errors import ConfigurationError, ExternalSystemError, TransientError

log = logging.getLogger(__name__)

TOOLS = ("initdb", "pg_ctl", "postgres", "pg_basebackup", "pg_rewind", "pg_verifybackup", "pg_controldata", "pgbench")


@lru_cache(maxsize=1)
def bindir() -> Path:
    """Directory of the PostgreSQL server binaries.

    ``$REGIONOPS_PG_BINDIR`` wins; else the directory pg_ctl on PATH really lives in
    (Debian links only some tools onto PATH); else the newest /usr/lib/postgresql/*/bin.
    """
    override = os.environ.get("REGIONOPS_PG_BINDIR")
    candidates: list[Path] = [Path(override)] if override else []
    found = shutil.which("pg_ctl")
    if found:
        candidates.append(Path(os.path.realpath(found)).parent)
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for cand in candidates:
        if (cand / "pg_ctl").exists() and (cand / "pg_rewind").exists():
            return cand
    raise ConfigurationError(
        "PostgreSQL server binaries not found (looked for pg_ctl and pg_rewind); "
        "install PostgreSQL 15 or set REGIONOPS_PG_BINDIR"
    )


def tool(name: str) -> str:
    """Absolute path of one PostgreSQL tool."""
    path = bindir() / name
    if not path.exists():
        raise ConfigurationError(f"PostgreSQL tool {name} not found in {bindir()}")
    return str(path)


def as_user(argv: Sequence[str], os_user: str | None) -> list[str]:
    """Prefix ``argv`` so it runs as ``os_user`` when we are root (and leave it alone otherwise)."""
    if os_user and os.geteuid() == 0:
        return ["runuser", "-u", os_user, "--", *argv]
    return list(argv)


def run_tool(
    argv: Sequence[str],
    *,
    os_user: str | None = None,
    timeout: float = 120,
    input_bytes: bytes | None = None,
    env: dict[str, str] | None = None,
    transient: bool = False,
    netns: str | None = None,
) -> str:
    """Run a tool to completion and return its combined output.

    Raises ExternalSystemError (TransientError when ``transient``) with the tool's last
    lines when it exits non-zero, and TransientError when it runs past ``timeout``.
    """
    full = as_user(argv, os_user)
    if netns:
        full = ["ip", "netns", "exec", netns, *full]
    log.debug("running %s", " ".join(full))
    try:
        proc = subprocess.run(
            full,
            input=input_bytes,
            capture_output=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            cwd="/",  # the tool's user may not be able to read our working directory
        )
    except subprocess.TimeoutExpired as exc:
        raise TransientError(f"{Path(argv[0]).name} did not finish within {timeout:g}s") from exc
    output = (proc.stdout + proc.stderr).decode(errors="replace")
    if proc.returncode != 0:
        tail = " | ".join(output.strip().splitlines()[-3:])
        cls = TransientError if transient else ExternalSystemError
        raise cls(f"{Path(argv[0]).name} exited {proc.returncode}: {tail}")
    return output


def reachable_by(os_user: str | None, path: Path) -> bool:
    """Whether ``os_user`` can traverse ``path`` (its nearest existing ancestor when absent).

    Always True when no user switch happens (not root, or no OS user).
    """
    if not os_user or os.geteuid() != 0:
        return True
    probe = path
    while not probe.exists():
        probe = probe.parent
    return (
        subprocess.run(["runuser", "-u", os_user, "--", "test", "-x", str(probe)], capture_output=True).returncode == 0
    )


def chown_to(path: Path, os_user: str | None) -> None:
    """Give ``path`` (recursively) to ``os_user`` when we are root."""
    if os_user and os.geteuid() == 0:
        shutil.chown(path, os_user, os_user)
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    shutil.chown(os.path.join(root, name), os_user, os_user)
                except FileNotFoundError:
                    pass  # a server may remove temp files while we walk


def process_state(pid: int) -> str | None:
    """The one-letter state of a process (R, S, T stopped, Z zombie ...), None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def child_pids(parent: int) -> list[int]:
    """Direct children of ``parent`` (a postmaster's children are the whole instance)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent:
            children.append(int(entry.name))
    return children


def signal_instance(ctl: PgCtl, sig: signal.Signals, timeout: float = 10) -> int:
    """Send ``sig`` to a server's postmaster and every process it started; returns how many.

    For SIGSTOP and SIGCONT it waits until every process has really stopped (state T) or
    run on: a signal is only acted on when its target is next scheduled, which on a loaded
    machine is not when ``kill`` returns, and a caller that checks "frozen?" must get yes.
    """
    pids = ctl.instance_pids()
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    if sig in (signal.SIGSTOP, signal.SIGCONT):
        stopped = sig == signal.SIGSTOP
        deadline = time.monotonic() + timeout
        # A process that exited meanwhile (None, Z) no longer matters either way.
        while any(process_state(p) not in (None, "Z") and (process_state(p) == "T") != stopped for p in pids):
            if time.monotonic() > deadline:
                raise TransientError(
                    f"{ctl.data_dir}: processes did not {'stop' if stopped else 'resume'} "
                    f"within {timeout:g}s of {sig.name}"
                )
            time.sleep(0.02)
    return len(pids)


def kill_instance(ctl: PgCtl, timeout: float = 10) -> int:
    """SIGKILL a server's postmaster and every process it started; wait until they are gone.

    Returns how many processes were signalled.  Killing the children too matters: a
    stopped child would hold the shared memory and block the next start.  SIGKILL works
    on a frozen (SIGSTOPped) server too, which no pg_ctl stop mode does.
    """
    pids = ctl.instance_pids()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while not all(process_state(p) in (None, "Z") for p in pids):
        if time.monotonic() > deadline:
            raise TransientError(f"{ctl.data_dir}: the killed server's processes did not exit within {timeout:g}s")
        time.sleep(0.05)
    return len(pids)


class PgCtl:
    """pg_ctl for one data directory."""

    def __init__(
        self,
        data_dir: str | Path,
        os_user: str | None = None,
        log_file: str | Path | None = None,
        netns: str | None = None,
    ):
        self.data_dir = str(data_dir)
        self.os_user = os_user
        self.log_file = str(log_file) if log_file else None
        # The network namespace the server runs in (the lab's WAN regions): a server started
        # anywhere else could not bind its region's address.
        self.netns = netns

    def is_running(self) -> bool:
        """pg_ctl status: True when a postmaster runs on this data directory.

        A killed postmaster whose parent has not reaped it yet (a zombie) counts as not
        running: pg_ctl would call it alive and wait for it forever.
        """
        try:
            pid = int((Path(self.data_dir) / "postmaster.pid").read_text().split("\n", 1)[0])
            if process_state(pid) in (None, "Z"):
                return False
        except (OSError, ValueError):
            pass  # no pid file, or not ours to read: pg_ctl decides
        try:
            run_tool([tool("pg_ctl"), "status", "-D", self.data_dir], os_user=self.os_user, timeout=10)
            return True
        except ExternalSystemError:
            return False

    def start(self, timeout: int = 60) -> str:
        """Start the server and wait until it accepts connections."""
        self._clear_dead_pid_file()
        argv = [tool("pg_ctl"), "start", "-w", "-t", str(timeout), "-D", self.data_dir]
        if self.log_file:
            argv += ["-l", self.log_file]
        return run_tool(argv, os_user=self.os_user, timeout=timeout + 10, netns=self.netns)

    def stop(self, mode: str = "fast", timeout: int = 60) -> str:
        """Stop the server: ``fast`` (clean), ``smart`` or ``immediate`` (crash-like)."""
        if mode not in {"smart", "fast", "immediate"}:
            raise ValueError(f"unknown pg_ctl stop mode {mode!r}")
        argv = [tool("pg_ctl"), "stop", "-w", "-t", str(timeout), "-m", mode, "-D", self.data_dir]
        return run_tool(argv, os_user=self.os_user, timeout=timeout + 10)

    def promote(self, timeout: int = 60) -> str:
        """pg_ctl promote -w."""
        argv = [tool("pg_ctl"), "promote", "-w", "-t", str(timeout), "-D", self.data_dir]
        return run_tool(argv, os_user=self.os_user, timeout=timeout + 10)

    def _clear_dead_pid_file(self) -> None:
        # A killed postmaster that nobody has reaped yet is a zombie: PostgreSQL's lock-file
        # check calls it alive and refuses to start.  Its pid file names a dead process.
        # The same holds for the lock file of its Unix socket (pid file lines 4 and 5: port
        # and socket directory), which pgBackRest's socket directory makes us use.
        pid_file = Path(self.data_dir) / "postmaster.pid"
        try:
            lines = pid_file.read_text().split("\n")
            pid = int(lines[0])
        except (OSError, ValueError):
            return
        if process_state(pid) != "Z":
            return
        if len(lines) > 4 and lines[3].strip() and lines[4].strip():
            socket_lock = Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}.lock"
            try:
                if int(socket_lock.read_text().split("\n", 1)[0]) == pid:
                    socket_lock.unlink(missing_ok=True)
            except (OSError, ValueError):
                pass  # no socket lock, or another server's: PostgreSQL decides
        pid_file.unlink(missing_ok=True)

    def postmaster_pid(self) -> int | None:
        """The postmaster's pid from postmaster.pid, or None when the server is not running."""
        try:
            pid = int((Path(self.data_dir) / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if process_state(pid) not in (None, "Z") else None

    def instance_pids(self) -> list[int]:
        """The postmaster and every process it started (backends, WAL sender, checkpointer ...)."""
        pid = self.postmaster_pid()
        return [] if pid is None else [pid, *child_pids(pid)]

    def is_frozen(self) -> bool:
        """True when the postmaster is stopped (SIGSTOP): it cannot honour any pg_ctl request."""
        pid = self.postmaster_pid()
        return pid is not None and process_state(pid) == "T"

    def reload(self) -> str:
        """Reload the configuration files."""
        return run_tool([tool("pg_ctl"), "reload", "-D", self.data_dir], os_user=self.os_user, timeout=30)


def server_log(data_dir: Path, node: str) -> Path:
    """Where a node's server logs: beside its data directory, which the server's OS user can write.

    The one definition for every start of a node (the seam's, restore's, a swap back's).
    """
    return data_dir.parent / f"{node}.log"
