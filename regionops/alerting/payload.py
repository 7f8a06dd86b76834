"""Prometheus Alertmanager's webhook payload, version "4", as pydantic models.

The schema is Alertmanager's (``notify/webhook``): a group of alerts with the
group's labels, and per alert its status, labels, annotations, start and end, the
generator URL and the fingerprint.  Unknown extra keys are ignored so that a newer
Alertmanager adding a field does not page anyone; a missing or mistyped field is an
error that names it (``alerts.0.fingerprint: required field is missing``).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

SUPPORTED_VERSION = "4"

Status = Literal["firing", "resolved"]


class _Payload(BaseModel):
    # Forward compatible (extra keys ignored) but immutable once parsed.
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class Alert(_Payload):
    """One alert of a notification."""

    status: Status
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: AwareDatetime = Field(alias="startsAt")
    ends_at: AwareDatetime | None = Field(
        None, alias="endsAt", description="0001-01-01T00:00:00Z while the alert still fires"
    )
    generator_url: str = Field("", alias="generatorURL")
    fingerprint: str = Field(min_length=1, max_length=128)

    @property
    def alertname(self) -> str | None:
        """The ``alertname`` label (every Prometheus alert has one)."""
        return self.labels.get("alertname")


class AlertmanagerPayload(_Payload):
    """A whole webhook notification (version 4)."""

    version: Literal["4"]
    group_key: str = Field(alias="groupKey")
    truncated_alerts: int = Field(0, ge=0, alias="truncatedAlerts")
    status: Status
    receiver: str
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field("", alias="externalURL")
    alerts: list[Alert]


class PayloadError(Exception):
    """The request body is not an acceptable v4 payload.  ``status`` is the HTTP code to answer."""

    def __init__(self, status: int, problems: list[str]):
        self.status = status
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def parse_payload(body: bytes) -> AlertmanagerPayload:
    """Parse and validate a webhook body.

    Raises PayloadError: 400 when the body is not JSON or not version "4" (naming the
    version received), 422 listing every schema problem, each naming its field.
    """
    try:
        data: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(400, [f"body is not valid JSON: {exc}"]) from None
    if not isinstance(data, dict):
        raise PayloadError(422, [f"(top level): expected a JSON object, got {type(data).__name__}"])
    # The version is checked on its own first: a v3 sender deserves "wrong version",
    # not a list of field errors that follow from it.
    version = data.get("version")
    if version != SUPPORTED_VERSION:
        got = "no version field" if "version" not in data else f"version {version!r}"
        raise PayloadError(
            400,
            [f"unsupported Alertmanager webhook payload: {got}; this receiver accepts version {SUPPORTED_VERSION!r}"],
        )
    try:
        return AlertmanagerPayload.model_validate(data)
    except ValidationError as exc:
        raise PayloadError(422, describe_validation_errors(exc)) from None


def describe_validation_errors(exc: ValidationError) -> list[str]:
    """One line per pydantic error, naming the field by its JSON path (``alerts.0.status``)."""
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "missing":
            problems.append(f"{where}: required field is missing")
        else:
            got = repr(err.get("input"))
            # The input can be a whole alert list: keep the reason readable.
            got = got if len(got) <= 120 else got[:117] + "..."
            problems.append(f"{where}: {err['msg']} (got {got})")
    return problems
