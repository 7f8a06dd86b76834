"""One change to how Prefect ends a flow run: it no longer waits for the heartbeat thread.

Prefect (3.8) sends a flow run's heartbeats from a thread that sleeps in one-second steps,
and a sync flow run joins that thread when it ends: every runbook run, and every subflow
of a drill, waited up to a second at its end for nothing (measured: 0.5-1.0 s per subflow,
a third of a DR drill's orchestration).  Prefect's own async engine does not join
(``join_on_exit=False``); this makes the sync engine do the same.  The thread is a daemon
that sees the stop at its next step and sends no heartbeat for a run that has ended (it
checks the run's state first), so heartbeats, and zombie-run detection built on them,
are unchanged.

Installed on import of :mod:`regionops.runbook.context`, which every runbook imports.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import prefect.flow_engine as flow_engine

_prefect_send_heartbeats = flow_engine._send_heartbeats


@contextmanager
def send_heartbeats_without_join(engine: Any, join_on_exit: bool = True) -> Iterator[None]:
    """Prefect's heartbeat context, never joining its thread on exit (``join_on_exit`` is ignored)."""
    with _prefect_send_heartbeats(engine, join_on_exit=False):
        yield


def install() -> None:
    """Make Prefect's flow engine use :func:`send_heartbeats_without_join` (idempotent)."""
    flow_engine._send_heartbeats = send_heartbeats_without_join  # type: ignore[assignment]
