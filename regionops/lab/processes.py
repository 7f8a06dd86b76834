"""Starting, finding and stopping the lab's background processes.

Each process runs in its own session (so stopping kills its children too), logs to
``logs/NAME.log`` and records its pid in ``run/NAME.pid`` inside the lab directory.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from regionops.errors import DeadlineExceeded, ExternalSystemError
from regionops.waiting import poll_until


def _pid_file(lab_dir: Path, name: str) -> Path:
    return lab_dir / "run" / f"{name}.pid"


def spawn(lab_dir: Path, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> int:
    """Start ``argv`` detached; return its pid."""
    (lab_dir / "run").mkdir(parents=True, exist_ok=True)
    (lab_dir / "logs").mkdir(parents=True, exist_ok=True)
    log = open(lab_dir / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        list(argv),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        start_new_session=True,
        cwd=str(lab_dir),
    )
    log.close()
    _pid_file(lab_dir, name).write_text(str(proc.pid))
    return proc.pid


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def running_pid(lab_dir: Path, name: str) -> int | None:
    """The pid of lab process ``name`` if it is running."""
    try:
        pid = int(_pid_file(lab_dir, name).read_text())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def stop(lab_dir: Path, name: str, timeout: float = 10) -> bool:
    """Stop lab process ``name`` and its children: SIGTERM, then SIGKILL after ``timeout``.

    Returns True when something was running.
    """
    pid = running_pid(lab_dir, name)
    _pid_file(lab_dir, name).unlink(missing_ok=True)
    if pid is None:
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        try:
            _reap(pid)
            poll_until(lambda: not pid_alive(pid), timeout=wait, interval=0.1, what=f"{name} to exit")
            return True
        except DeadlineExceeded:
            continue
    raise ExternalSystemError(f"lab process {name} (pid {pid}) did not exit after SIGKILL")


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def wait_for_port(
    port: int, *, timeout: float, what: str, pid: int | None = None, log: Path | None = None, host: str = "127.0.0.1"
) -> None:
    """Wait until ``port`` accepts connections; fail early (with the log's tail) if ``pid`` dies."""

    def ready() -> bool:
        if pid is not None and not pid_alive(pid):
            tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log and log.exists() else []
            raise ExternalSystemError(f"{what} exited during start-up: " + " | ".join(tail))
        return port_open(port, host)

    poll_until(ready, timeout=timeout, interval=0.2, what=f"{what} on port {port}")


def http_ok(url: str) -> bool:
    """True when GET ``url`` answers 2xx within 2 s (lab components' health endpoints)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback URL we built
            return 200 <= resp.status < 300
    except OSError:
        return False


def wait_port_free(port: int, timeout: float = 10, host: str = "127.0.0.1") -> bool:
    """Wait until nothing listens on ``host:port``; True when free."""
    try:
        poll_until(lambda: not port_open(port, host), timeout=timeout, interval=0.1, what=f"port {port} to be free")
        return True
    except DeadlineExceeded:
        return False


def command_lines() -> Iterator[tuple[int, bytes]]:
    """Every process's pid and raw command line (arguments separated by NUL), as ``/proc`` shows them now."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        yield int(entry.name), cmdline
