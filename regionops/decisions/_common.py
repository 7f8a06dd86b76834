"""Shared pieces of the decision modules: the frozen model base and sentence helpers.

Reasons are read by a human on call, often in a Slack message at night, so numbers are
written the way PostgreSQL prints them (LSNs as ``0/5000060``) and byte counts carry a
readable unit once they are large.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict


class Decision(BaseModel):
    """Base of every decision model: immutable and strict, so a decision cannot drift after it is made."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def fmt_bytes(n: int) -> str:
    """``120 bytes``; large values also get a binary unit: ``20971520 bytes (20.0 MiB)``."""
    exact = f"{n} byte" if n == 1 else f"{n} bytes"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if abs(size) < 1024 or unit == "TiB":
            if abs(n) < 1024:
                return exact
            return f"{exact} ({size:.1f} {unit})"
    return exact  # pragma: no cover - the loop always returns


def fmt_seconds(s: float) -> str:
    """``12.0 s`` - one decimal is enough for humans and stable for tests."""
    return f"{s:.1f} s"


def fmt_endpoint(endpoint: tuple[str, int] | None) -> str:
    """``host:port`` or a placeholder when unknown."""
    return f"{endpoint[0]}:{endpoint[1]}" if endpoint else "an unknown endpoint"


def join_clauses(parts: Iterable[str], sep: str = "; ") -> str:
    """Join non-empty sentence fragments."""
    return sep.join(p for p in parts if p)
