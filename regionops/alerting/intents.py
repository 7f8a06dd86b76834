"""Which alerts start which runbook, and the Prefect event a firing alert becomes.

This module is the one place that maps alert names to intents.  The receiver uses it
to build events; :mod:`deployments.triggers` uses it to build the deployment triggers
that match those events, so the two cannot disagree about label names.

An event looks like::

    event:    regionops.alert.firing
    resource: prefect.resource.id = regionops.cluster.core
              regionops.cluster = core, regionops.region = eu, regionops.node = eu-1,
              regionops.alertname = PostgresPrimaryDown, regionops.intent = failover,
              regionops.fingerprint = 5f1c...
    payload:  fingerprint, startsAt, annotations, generatorURL, groupKey, receiver
    id:       uuid5(fingerprint, startsAt)  -- the same alert is always the same event
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from pydantic import BaseModel, Field

from regionops.alerting.payload import Alert, AlertmanagerPayload
from regionops.topology import Topology

EVENT_NAME = "regionops.alert.firing"
RESOURCE_PREFIX = "regionops.cluster."

# Resource label names, shared with the trigger definitions.
CLUSTER = "regionops.cluster"
REGION = "regionops.region"
NODE = "regionops.node"
ALERTNAME = "regionops.alertname"
INTENT = "regionops.intent"
FINGERPRINT = "regionops.fingerprint"

# Event ids are derived from the alert so that every receiver replica, and every
# retry, sends the *same* event for the same alert: the Prefect server stores it once
# and its trigger service ignores an id it has already evaluated.
_EVENT_NAMESPACE = uuid.UUID("6f1d7c3e-8f0b-4d7a-9a43-2f6f0c1b5e21")

# Label values end up in resource ids and flow parameters: keep them plain names.
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def _template(label: str) -> str:
    return "{{ event.resource['" + label + "'] }}"


def _optional(label: str) -> str:
    # `.get` renders a missing label as null (the parameter's None), not a template error.
    return "{{ event.resource.get('" + label + "') }}"


_REASON = (
    "alert {{ event.resource['" + ALERTNAME + "'] }} (fingerprint {{ event.payload['fingerprint'] }}, "
    "firing since {{ event.payload['startsAt'] }})"
)


@dataclass(frozen=True)
class Intent:
    """What a kind of alert asks for: which runbook, keyed how, with which parameters."""

    name: str
    runbook: str  # the runbook (flow) name, as in flows/registry.py
    required_labels: tuple[str, ...]
    for_each: tuple[str, ...]
    cooldown_seconds: int
    parameters: dict[str, Any]
    summary: str

    def sentence(self) -> str:
        """How this intent starts runs, for logs and docs."""
        keys = " and ".join(k.removeprefix("regionops.") for k in self.for_each)
        return f"{self.name}: starts {self.runbook} at most once per {keys} every {self.cooldown_seconds} s"


FAILOVER = Intent(
    name="failover",
    runbook="failover",
    required_labels=("cluster",),
    # One failover per cluster per window, whatever node or fingerprint the alert has:
    # two Prometheus servers (or two rules) reporting the same dead primary must not
    # start two promotions.
    for_each=(CLUSTER,),
    cooldown_seconds=900,
    # `node` lets the runbook refuse when the alert names a node that is no longer the
    # primary (a stale alert after an earlier failover).  A primary-down alert is never
    # dropped because a lock is held: the failover takes the lock from a run that has
    # changed nothing yet, waits (up to 30 min) for one that has, and pages in Slack
    # whenever it ends without failing over (page_if_no_failover).
    parameters={
        "params": {
            "cluster": _template(CLUSTER),
            "node": _optional(NODE),
            "reason": _REASON,
            "lock_wait_seconds": 1800,
            "page_if_no_failover": True,
        }
    },
    summary="the primary of a cluster is down: promote the best replica",
)

REPLICA_RESYNC = Intent(
    name="replica-resync",
    runbook="replica-resync",
    required_labels=("cluster", "node"),
    # Per replica: two lagging replicas are two repairs (serialised by the cluster lock).
    for_each=(CLUSTER, NODE),
    cooldown_seconds=600,
    # Replica alerts typically fire *because* a failover is under way: wait for the
    # cluster lock (visibly, in the run) instead of being refused and forgotten.
    parameters={"params": {"cluster": _template(CLUSTER), "node": _template(NODE), "lock_wait_seconds": 600}},
    summary="a replica lags or stopped replicating: watch, rewind or re-clone it",
)

INTENTS: dict[str, Intent] = {i.name: i for i in (FAILOVER, REPLICA_RESYNC)}

# The mapping, as data: alertname -> intent name.
ALERT_INTENTS: dict[str, str] = {
    "PostgresPrimaryDown": FAILOVER.name,
    "PostgresReplicaLagging": REPLICA_RESYNC.name,
    "PostgresReplicationBroken": REPLICA_RESYNC.name,
}


def intent_for(alertname: str | None) -> Intent | None:
    """The intent an alert name maps to, or None for alerts this receiver does not act on."""
    name = ALERT_INTENTS.get(alertname or "")
    return INTENTS[name] if name else None


class AlertEvent(BaseModel):
    """The Prefect event one firing alert becomes (independent of the Prefect client)."""

    id: uuid.UUID
    event: str = EVENT_NAME
    resource: dict[str, str]
    payload: dict[str, Any]
    intent: str = Field(description="intent name, also in resource[regionops.intent]")
    dedup_key: str = Field(description="fingerprint@startsAt: what makes two alerts the same")

    @property
    def cluster(self) -> str:
        return self.resource[CLUSTER]

    def bucket(self) -> str:
        """The trigger bucket this event falls into (``failover:core``), as the trigger keys it."""
        keys = [self.resource.get(label, "") for label in INTENTS[self.intent].for_each]
        return ":".join([self.intent, *keys])


class LabelProblem(ValueError):
    """A firing alert that maps to an intent lacks a label the intent needs, or has a bad one."""


def dedup_key(alert: Alert) -> str:
    """``fingerprint@startsAt`` (UTC): Alertmanager repeats a still-firing alert with both unchanged."""
    return f"{alert.fingerprint}@{alert.starts_at.astimezone(UTC).isoformat()}"


def event_id(alert: Alert) -> uuid.UUID:
    """The deterministic event id of an alert."""
    return uuid.uuid5(_EVENT_NAMESPACE, dedup_key(alert))


def _label(alert: Alert, payload: AlertmanagerPayload, *names: str) -> str | None:
    # An alert's own labels win; common labels fill gaps (they are the same for all).
    for name in names:
        value = alert.labels.get(name) or payload.common_labels.get(name)
        if value:
            return value
    return None


def resolve_target(
    alert: Alert, payload: AlertmanagerPayload, intent: Intent, topology: Topology | None = None
) -> dict[str, str]:
    """cluster, region and node of a firing alert, from its labels (and the topology if given).

    ``node`` comes from the ``node`` label, else ``instance``; with a topology an
    ``instance`` of ``host:port`` is resolved to the node listening there, and a
    missing region is filled in from the node.  Raises LabelProblem naming the label.
    """
    target: dict[str, str] = {}
    cluster = _label(alert, payload, "cluster")
    node = _label(alert, payload, "node", "instance")
    region = _label(alert, payload, "region")
    for key, value in (("cluster", cluster), ("node", node), ("region", region)):
        if value is None:
            continue
        if not _LABEL_VALUE.match(value):
            raise LabelProblem(f"labels.{key}: {value!r} is not a plain name (letters, digits, . _ : -)")
        target[key] = value
    if topology is not None and cluster is not None:
        target.update(_resolve_in_topology(topology, cluster, node, region))
    for key in intent.required_labels:
        if key not in target:
            hint = " (or instance)" if key == "node" else ""
            raise LabelProblem(f"labels.{key}{hint}: required for {alert.alertname} ({intent.name}), missing")
    return target


def _resolve_in_topology(topology: Topology, cluster: str, node: str | None, region: str | None) -> dict[str, str]:
    if cluster not in topology.clusters:
        raise LabelProblem(
            f"labels.cluster: unknown cluster {cluster!r}; topology {topology.name} has: "
            + ", ".join(sorted(topology.clusters))
        )
    nodes = topology.clusters[cluster].nodes
    resolved: dict[str, str] = {}
    if node is not None and node not in nodes:
        by_address = {f"{n.host}:{n.port}": name for name, n in nodes.items()}
        if node not in by_address:
            raise LabelProblem(
                f"labels.node: {node!r} is neither a node of cluster {cluster} ("
                + ", ".join(sorted(nodes))
                + ") nor one's host:port"
            )
        node = by_address[node]
        resolved["node"] = node
    if node is not None and region is None:
        resolved["region"] = nodes[node].region
    return resolved


def alert_event(
    alert: Alert, payload: AlertmanagerPayload, intent: Intent, topology: Topology | None = None
) -> AlertEvent:
    """The event for one firing alert that maps to ``intent``.  Raises LabelProblem."""
    target = resolve_target(alert, payload, intent, topology)
    resource = {
        "prefect.resource.id": RESOURCE_PREFIX + target["cluster"],
        "prefect.resource.name": target["cluster"],
        CLUSTER: target["cluster"],
        ALERTNAME: alert.alertname or "",
        INTENT: intent.name,
        FINGERPRINT: alert.fingerprint,
    }
    if "region" in target:
        resource[REGION] = target["region"]
    if "node" in target:
        resource[NODE] = target["node"]
    payload_doc = {
        "fingerprint": alert.fingerprint,
        "startsAt": alert.starts_at.astimezone(UTC).isoformat(),
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "generatorURL": alert.generator_url,
        "groupKey": payload.group_key,
        "receiver": payload.receiver,
        "externalURL": payload.external_url,
    }
    return AlertEvent(
        id=event_id(alert), resource=resource, payload=payload_doc, intent=intent.name, dedup_key=dedup_key(alert)
    )
