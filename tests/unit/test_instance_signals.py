"""Freezing, resuming and killing a server's processes is done when the call returns.

A stand-in "instance" of real processes (a parent and its children): the signals are real,
only pg_ctl's pid file is replaced by a known pid list.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from regionops.drivers.pgtools import kill_instance, process_state, signal_instance


class Instance:
    """A process tree standing in for a postmaster and its children."""

    def __init__(self, children: int = 3):
        self.procs = [
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(children + 1)
        ]
        self.data_dir = "/nowhere"

    def instance_pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def states(self) -> set[str | None]:
        for p in self.procs:
            p.poll()  # reap the dead so they read as gone, as PID 1 would
        return {process_state(p.pid) for p in self.procs}


@pytest.fixture
def instance():
    inst = Instance()
    yield inst
    for p in inst.procs:
        p.kill()
        p.wait()


def test_stop_then_continue_is_visible_the_moment_each_call_returns(instance):
    for _ in range(20):  # a race shows up in some rounds, not every one
        assert signal_instance(instance, signal.SIGSTOP) == 4
        assert instance.states() == {"T"}
        assert signal_instance(instance, signal.SIGCONT) == 4
        assert "T" not in instance.states()


def test_kill_ends_a_frozen_instance(instance):
    signal_instance(instance, signal.SIGSTOP)
    assert kill_instance(instance) == 4
    assert instance.states() <= {None, "Z"}
