"""The flow engine's heartbeat context, as regionops installs it: a run's end does not wait for its thread."""

from __future__ import annotations

import threading
import time

import prefect.flow_engine as flow_engine

from regionops.runbook import context  # noqa: F401 - installs the change, as every runbook does
from regionops.runbook.prefect_engine import send_heartbeats_without_join


class FakeEngine:
    """What Prefect's heartbeat context reads of a flow run engine: the interval, the run, the emitter."""

    heartbeat_seconds = 30
    flow_run = None

    def __init__(self) -> None:
        self.beats = 0
        self.logger = flow_engine._engine_logger

    def _build_heartbeat_event_template(self) -> tuple[None, None]:
        return None, None

    def _emit_flow_run_heartbeat(self, resource: object, related: object) -> None:
        self.beats += 1


def test_installed_in_every_runbook_process():
    assert flow_engine._send_heartbeats is send_heartbeats_without_join


def test_the_runs_end_leaves_the_sleeping_thread_to_stop_by_itself():
    engine = FakeEngine()
    before = set(threading.enumerate())
    with flow_engine._send_heartbeats(engine):
        deadline = time.monotonic() + 5
        while engine.beats == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        (thread,) = [t for t in threading.enumerate() if t not in before]
    # Right after the end the heartbeat thread still sleeps its one-second step: nobody waited for it.
    assert thread.is_alive()
    thread.join(3)
    assert not thread.is_alive()  # it saw the stop at its next step
    assert engine.beats == 1  # and sent nothing after the run ended
