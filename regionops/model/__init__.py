"""The project's data at the bottom of the layers: plain models, no driver behind them.

Drivers produce these and pure decisions (:mod:`regionops.decisions`) and region health
(:mod:`regionops.health`) consume them, without importing a driver (and with it psycopg,
boto3, httpx or slack_sdk) or Prefect.  ``tests/unit/test_purity.py`` keeps it so.

- :mod:`.state`: observed state of nodes (role, LSN, control data, WAL end, slots);
  its names are importable from here: ``from regionops.model import NodeState``;
- :mod:`.probes`: what probes of apps, buckets and DNS records saw;
- :mod:`.restore`: what a restore plans, sends to a node's host and gets back;
- :mod:`.release`: the release's metrics samples and health gates;
- :mod:`.faults`: drill fault names and what an injection did;
- :mod:`.locks`: the names of the locks that guard a cluster or an application.
"""

from regionops.model.state import (
    CanaryWrite,
    CommonPoint,
    ControlData,
    NodeState,
    ReplicationConnection,
    Role,
    Slot,
    WalEnd,
    WalReceiver,
)

__all__ = [
    "CanaryWrite",
    "CommonPoint",
    "ControlData",
    "NodeState",
    "ReplicationConnection",
    "Role",
    "Slot",
    "WalEnd",
    "WalReceiver",
]
