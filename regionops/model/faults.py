"""Drill faults: their names and what one injection (or heal) did.

Plain data, no driver: the injectors (:mod:`regionops.drivers.faults` for production,
:mod:`regionops.lab.faults` for the lab) produce these, the DR drill reports them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

from pydantic import BaseModel

from regionops.errors import PreconditionFailed

FaultName = Literal[
    "primary-crash", "region-outage", "region-partition", "primary-freeze", "replica-loss", "planned-switchover"
]
FAULT_NAMES: tuple[str, ...] = get_args(FaultName)

# Faults aimed at the primary (a region fault at the primary's region); replica-loss aims at
# a replica; planned-switchover at nothing.
PRIMARY_FAULTS: frozenset[str] = frozenset({"primary-crash", "region-outage", "region-partition", "primary-freeze"})
# Faults that act on the target's whole region (in a lab whose regions are namespaces).
REGION_WIDE_FAULTS: frozenset[str] = frozenset({"region-outage", "region-partition"})


class FaultInjectionFailed(PreconditionFailed):
    """The fault could not be injected (command failed, node unreachable); nothing was disturbed by it."""


class FaultInjection(BaseModel):
    """What one injection (or heal) did."""

    fault: FaultName
    cluster: str
    node: str | None
    region: str | None
    at: datetime
    changed: bool
    detail: str
    seconds: float = 0.0

    def sentence(self) -> str:
        """One line for logs and reports."""
        return self.detail
