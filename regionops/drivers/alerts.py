"""Posting an alert to the alert receiver, as Alertmanager's webhook does (payload version 4).

The DR drill's ``alert`` recovery path uses this to prove the alert path end to end:
the receiver turns the alert into a Prefect event, a deployment trigger starts the
runbook.  The payload has Alertmanager's shape; the fingerprint and start time make
each drill's alert a new alert (the receiver deduplicates on both).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import httpx
from pydantic import BaseModel

from regionops.errors import ConfigurationError, ExternalSystemError, TransientError
from regionops.topology import Topology

ALERTS_PATH = "/alerts"


def alertmanager_payload(
    alertname: str, labels: dict[str, str], starts_at: datetime, summary: str, receiver: str = "regionops-runbooks"
) -> dict:
    """One firing alert in an Alertmanager webhook notification (version 4)."""
    all_labels = {"alertname": alertname, **labels}
    fingerprint = hashlib.sha256(
        ("|".join(f"{k}={v}" for k, v in sorted(all_labels.items())) + starts_at.isoformat()).encode()
    ).hexdigest()[:16]
    group = {"alertname": alertname, "cluster": labels.get("cluster", "")}
    return {
        "version": "4",
        "groupKey": "{}:{" + ",".join(f'{k}="{v}"' for k, v in sorted(group.items())) + "}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": receiver,
        "groupLabels": group,
        "commonLabels": all_labels,
        "commonAnnotations": {"summary": summary},
        "externalURL": "",
        "alerts": [
            {
                "status": "firing",
                "labels": all_labels,
                "annotations": {"summary": summary},
                "startsAt": starts_at.astimezone(UTC).isoformat(),
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": fingerprint,
            }
        ],
    }


class AlertPosted(BaseModel):
    """What the receiver answered."""

    alertname: str
    status_code: int
    detail: str

    def sentence(self) -> str:
        return f"posted alert {self.alertname} to the alert receiver: HTTP {self.status_code} ({self.detail})"


class AlertReceiverClient:
    """POSTs Alertmanager payloads to the receiver with its bearer token."""

    def __init__(self, base_url: str, token: str, client: httpx.Client | None = None, timeout: float = 10):
        self.url = base_url.rstrip("/") + ALERTS_PATH
        self._token = token
        self.client = client or httpx.Client(timeout=timeout)

    def post(self, payload: dict) -> AlertPosted:
        """Deliver one notification.  Raises ExternalSystemError when the receiver refuses it."""
        alertname = payload["alerts"][0]["labels"].get("alertname", "?")
        try:
            resp = self.client.post(self.url, json=payload, headers={"Authorization": f"Bearer {self._token}"})
        except httpx.HTTPError as exc:
            raise TransientError(f"alert receiver {self.url} unreachable: {type(exc).__name__}: {exc}") from exc
        detail = resp.text[:300]
        if resp.status_code >= 300:
            raise ExternalSystemError(f"alert receiver refused {alertname}: HTTP {resp.status_code} {detail}")
        return AlertPosted(alertname=alertname, status_code=resp.status_code, detail=detail)


def alert_client_for(topology: Topology) -> AlertReceiverClient:
    """A client for the topology's alert receiver (``alerting`` section)."""
    if topology.alerting is None:
        raise ConfigurationError(f"topology {topology.name} has no alerting section: no alert receiver to post to")
    return AlertReceiverClient(topology.alerting.receiver_url, topology.alerting.token.resolve())
