"""From a validated Alertmanager payload to events sent and a per-alert account of what happened.

HTTP-free, so it is tested with a fake emitter.  The order matters:

1. Every alert is looked at before anything is sent: one firing alert with a missing
   ``cluster`` label makes the whole notification a 422 and nothing is emitted, so a
   broken alerting rule is loud instead of half-acted on.
2. Duplicates (same fingerprint and startsAt, in this payload or already sent) are
   dropped.
3. The remaining events go out in one batch; only once the Prefect server has them
   are they recorded as sent.  If delivery fails nothing is recorded and the caller
   answers 503, so Alertmanager's retry gets a clean second chance.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel

from regionops.alerting.emitter import EventEmitter
from regionops.alerting.intents import ALERT_INTENTS, INTENTS, AlertEvent, LabelProblem, alert_event, intent_for
from regionops.alerting.ledger import AlertLedger
from regionops.alerting.payload import AlertmanagerPayload, PayloadError
from regionops.model.locks import lock_name
from regionops.topology import Topology

logger = logging.getLogger(__name__)


class Outcome(StrEnum):
    """What the receiver did with one alert."""

    EMITTED = "emitted"
    DUPLICATE = "duplicate"
    RESOLVED = "resolved-ignored"
    UNKNOWN = "unknown-alertname-ignored"


class AlertResult(BaseModel):
    """One alert's fate, as a sentence and as fields."""

    index: int
    alertname: str | None
    fingerprint: str
    status: str
    outcome: Outcome
    intent: str | None = None
    cluster: str | None = None
    node: str | None = None
    event_id: str | None = None
    opened_trigger_window: bool | None = None
    detail: str


class Receipt(BaseModel):
    """The receiver's answer to one notification."""

    receiver: str
    group_key: str
    received: int
    emitted: int
    truncated_alerts: int
    results: list[AlertResult]

    def sentence(self) -> str:
        """``2 alert(s) from group ...: 1 emitted, 1 duplicate``."""
        counts: dict[str, int] = {}
        for r in self.results:
            counts[r.outcome.value] = counts.get(r.outcome.value, 0) + 1
        summary = ", ".join(f"{n} {k}" for k, n in counts.items()) or "nothing"
        extra = f" ({self.truncated_alerts} more truncated by Alertmanager)" if self.truncated_alerts else ""
        return f"{self.received} alert(s) from group {self.group_key}: {summary}{extra}"


def _ago(seconds: float) -> str:
    return f"{max(seconds, 0):.0f} s ago"


class AlertProcessor:
    """Turns payloads into events through ``emitter``, remembering what was sent in ``ledger``."""

    def __init__(self, emitter: EventEmitter, ledger: AlertLedger, topology: Topology | None = None):
        self.emitter = emitter
        self.ledger = ledger
        self.topology = topology
        # One notification at a time: the duplicate check and the record of what was
        # sent must not interleave, or a storm of concurrent copies would all pass.
        self._lock = asyncio.Lock()

    async def process(self, payload: AlertmanagerPayload) -> Receipt:
        """Handle one notification.  Raises PayloadError (422) or EmitFailed; see the module doc."""
        planned: list[tuple[int, AlertEvent]] = []
        results: dict[int, AlertResult] = {}
        problems: list[str] = []
        for i, alert in enumerate(payload.alerts):
            base = {"index": i, "alertname": alert.alertname, "fingerprint": alert.fingerprint, "status": alert.status}
            if alert.status == "resolved":
                results[i] = AlertResult(
                    **base, outcome=Outcome.RESOLVED, detail="resolved: a resolved alert starts nothing"
                )
                continue
            intent = intent_for(alert.alertname)
            if intent is None:
                results[i] = AlertResult(
                    **base,
                    outcome=Outcome.UNKNOWN,
                    detail=f"alertname {alert.alertname!r} starts no runbook (mapped: "
                    f"{', '.join(sorted(ALERT_INTENTS))}): ignored",
                )
                continue
            try:
                planned.append((i, alert_event(alert, payload, intent, self.topology)))
            except LabelProblem as exc:
                problems.append(f"alerts.{i}.{exc}")
        if problems:
            raise PayloadError(422, problems)

        async with self._lock:
            to_send: list[tuple[int, AlertEvent]] = []
            in_batch: set[str] = set()
            for i, event in planned:
                alert = payload.alerts[i]
                base = {
                    "index": i,
                    "alertname": alert.alertname,
                    "fingerprint": alert.fingerprint,
                    "status": alert.status,
                    "intent": event.intent,
                    "cluster": event.cluster,
                    "node": event.resource.get("regionops.node"),
                    "event_id": str(event.id),
                }
                if event.dedup_key in in_batch or self.ledger.is_duplicate(event.dedup_key):
                    results[i] = AlertResult(
                        **base,
                        outcome=Outcome.DUPLICATE,
                        detail=f"alert {event.dedup_key} was already sent as event {event.id}: nothing new",
                    )
                    continue
                in_batch.add(event.dedup_key)
                to_send.append((i, event))

            await self.emitter.emit([e for _, e in to_send])

            for i, event in to_send:
                results[i] = self._emitted(i, payload, event)
            if to_send:
                self.ledger.save()

        receipt = Receipt(
            receiver=payload.receiver,
            group_key=payload.group_key,
            received=len(payload.alerts),
            emitted=len(to_send),
            truncated_alerts=payload.truncated_alerts,
            results=[results[i] for i in sorted(results)],
        )
        for r in receipt.results:
            logger.info("alert %s %s (%s): %s", r.alertname, r.fingerprint, r.outcome.value, r.detail)
        return receipt

    def _emitted(self, i: int, payload: AlertmanagerPayload, event: AlertEvent) -> AlertResult:
        intent = INTENTS[event.intent]
        now = self.ledger.clock()
        earlier = self.ledger.open_window(event.bucket())
        others = self.ledger.other_open_requests(event.cluster, event.intent)
        opened = self.ledger.record(event, intent.cooldown_seconds)
        target = f"cluster {event.cluster}" + (
            f" node {event.resource['regionops.node']}" if "regionops.node" in intent.for_each else ""
        )
        if opened:
            detail = (
                f"sent event {event.id}; the {intent.name} trigger starts one {intent.runbook} run for "
                f"{target} and absorbs further alerts for it for {intent.cooldown_seconds} s"
            )
        else:
            assert earlier is not None
            detail = (
                f"sent event {event.id}; {intent.name} for {target} was already requested "
                f"{_ago(now - earlier.at)} by alert {earlier.fingerprint} ({earlier.alertname}): "
                f"the trigger's {intent.cooldown_seconds} s window absorbs this one, no second run"
            )
        for other in others:
            started = datetime.fromtimestamp(other.at, UTC).isoformat(timespec="seconds")
            detail += (
                f"; note: {other.intent} of cluster {other.cluster} was requested at {started} "
                f"(alert {other.fingerprint}): this {intent.runbook} run waits for the cluster lock "
                f"{lock_name(event.cluster)} or is refused by it, changing nothing"
            )
        alert = payload.alerts[i]
        return AlertResult(
            index=i,
            alertname=alert.alertname,
            fingerprint=alert.fingerprint,
            status=alert.status,
            outcome=Outcome.EMITTED,
            intent=event.intent,
            cluster=event.cluster,
            node=event.resource.get("regionops.node"),
            event_id=str(event.id),
            opened_trigger_window=opened,
            detail=detail,
        )
