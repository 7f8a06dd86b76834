"""The one way to wait for something: a predicate, a deadline and an interval."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from regionops.errors import DeadlineExceeded

T = TypeVar("T")


def poll_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.2,
    what: str = "condition",
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``probe`` until it returns something truthy, and return that.

    Raises :class:`DeadlineExceeded` naming ``what`` when ``timeout`` seconds pass.
    Exceptions raised by ``probe`` propagate: a probe that can fail transiently
    should catch and return a falsy value itself.
    """
    deadline = clock() + timeout
    while True:
        result = probe()
        if result:
            return result
        if clock() >= deadline:
            raise DeadlineExceeded(f"timed out after {timeout:g}s waiting for {what}")
        sleep(interval)
