"""Deployment triggers that turn alert events into runs, for Python and for prefect.yaml.

One definition per intent (:data:`regionops.alerting.intents.INTENTS`), usable as

- ``flow.to_deployment(name=..., triggers=triggers_for("failover", {"topology": path}))``
  (the lab's serve process) or ``deployment_triggers("failover")`` (tests), and
- YAML in ``prefect.yaml``: ``deployments/triggers.yaml`` is generated from the same
  definitions (``python -m deployments.triggers --write``) and a unit test fails if
  it drifts.

Each trigger is a *reactive* event trigger with ``threshold: 1``, ``within: <cooldown>``
and ``for_each`` the cluster (failover) or cluster and node (resync).  Prefect fires
such a trigger on the first matching event and then ignores matching events for the
same ``for_each`` key until ``within`` has passed (the server's bucket moves to the
end of the window after firing; "eager debouncing" in Prefect's docs).  So a storm of
alerts for one cluster starts one failover, even from several receivers.  Prefect
3.8's RunDeployment action takes no idempotency key of ours (it uses one per trigger
firing), which is why the window, not a key, is the trigger-side guarantee; the
alert-derived event id (:func:`regionops.alerting.intents.event_id`) is the other.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import sys
import typing
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

from regionops.alerting.intents import EVENT_NAME, INTENT, INTENTS, RESOURCE_PREFIX, Intent
from regionops.errors import ConfigurationError

TRIGGERS_YAML = Path(__file__).with_name("triggers.yaml")


def _intent(name: str) -> Intent:
    if name not in INTENTS:
        raise ConfigurationError(f"unknown alert intent {name!r}; known: {', '.join(sorted(INTENTS))}")
    return INTENTS[name]


def _parameters(intent: Intent, params_defaults: Mapping[str, Any] | None) -> dict[str, Any]:
    parameters = copy.deepcopy(intent.parameters)
    if params_defaults:
        # Prefect merges a triggered run's parameters into the deployment's at the top
        # level only: the trigger's `params` *replaces* the deployment's default
        # `params`, so deployment-wide values (the topology file) must be repeated here.
        parameters["params"] = {**params_defaults, **parameters["params"]}
    return parameters


def trigger_spec(intent_name: str, params_defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The trigger for ``intent_name`` as a plain mapping (the prefect.yaml form).

    ``params_defaults`` are fixed values added to the ``params`` the trigger passes
    (e.g. ``{"topology": "/etc/regionops/topology.yaml"}``); event values win.
    """
    intent = _intent(intent_name)
    return {
        "type": "event",
        "name": f"alert: {intent.name}",
        "description": f"{intent.summary}. {intent.sentence()} (regionops alert receiver events).",
        "enabled": True,
        "match": {"prefect.resource.id": RESOURCE_PREFIX + "*", INTENT: intent.name},
        "expect": [EVENT_NAME],
        "for_each": list(intent.for_each),
        "posture": "Reactive",
        "threshold": 1,
        "within": intent.cooldown_seconds,
        "parameters": _parameters(intent, params_defaults),
    }


def deployment_triggers(
    intent_name: str, params_defaults: Mapping[str, Any] | None = None
) -> list[DeploymentEventTrigger]:
    """The deployment triggers (one) that start ``intent_name``'s runbook from alert events."""
    spec = trigger_spec(intent_name, params_defaults)
    return [DeploymentEventTrigger(**{**spec, "within": timedelta(seconds=spec["within"])})]


def triggers_for(runbook: str, params_defaults: Mapping[str, Any] | None = None) -> list[DeploymentEventTrigger]:
    """The alert triggers of every intent that starts ``runbook`` (none for most runbooks).

    For the one deployment per runbook that alerts should start, e.g. the lab's serve
    process: ``flow.to_deployment(..., triggers=triggers_for(name, {"topology": path}))``.
    """
    return [
        t
        for intent in INTENTS.values()
        if intent.runbook == runbook
        for t in deployment_triggers(intent.name, params_defaults)
    ]


def check_flow_parameters(intent_name: str, flow: Any) -> None:
    """Fail early when the trigger passes parameters ``flow`` does not take.

    The Prefect server validates a triggered run's parameters against the deployment's
    schema; a mismatch would surface only as a failed automation action at 3 a.m.
    Checks the top-level names and, for a pydantic-model parameter, its field names.
    """
    intent = _intent(intent_name)
    signature = inspect.signature(flow.fn)
    # Flow modules use `from __future__ import annotations`: resolve the strings.
    hints = typing.get_type_hints(flow.fn)
    problems = []
    for name, value in intent.parameters.items():
        if name not in signature.parameters:
            problems.append(f"flow {flow.name} has no parameter {name!r}")
            continue
        model = hints.get(name)
        fields = getattr(model, "model_fields", None)
        if isinstance(value, dict) and model is not None and fields is not None:
            problems += [
                f"{flow.name} parameter {name} ({model.__name__}) has no field {key!r}"
                for key in value
                if key not in fields
            ]
    if problems:
        raise ConfigurationError(f"alert trigger {intent.name} does not fit its flow: " + "; ".join(problems))


def render_triggers_yaml() -> str:
    """The text of ``deployments/triggers.yaml``: every intent's trigger list under an anchor."""
    lines = [
        "# Deployment triggers for alert-started runbooks (regionops alert receiver events).",
        "# GENERATED by `python -m deployments.triggers --write` from regionops/alerting/intents.py;",
        "# edit that module, not this file (tests/unit/test_alert_receiver.py checks they match).",
        "#",
        "# Use in prefect.yaml: copy the `definitions.alert_triggers` block into prefect.yaml's",
        "# `definitions:` and give the ONE deployment per runbook that alerts should start",
        "#   triggers: *failover_alert_triggers       (failover)",
        "#   triggers: *replica_resync_alert_triggers (replica resync)",
        "# Only one deployment per runbook may carry it: every deployment that does gets a run.",
        "definitions:",
        "  alert_triggers:",
    ]
    for name in INTENTS:
        anchor = name.replace("-", "_") + "_alert_triggers"
        body = yaml.safe_dump([trigger_spec(name)], sort_keys=False, width=1000, allow_unicode=True)
        lines.append(f"    {name}: &{anchor}")
        lines += ["      " + line for line in body.rstrip("\n").splitlines()]
    return "\n".join(lines) + "\n"


def load_triggers_yaml(path: Path = TRIGGERS_YAML) -> dict[str, list[dict[str, Any]]]:
    """intent name -> trigger specs, read back from the YAML file."""
    return yaml.safe_load(path.read_text())["definitions"]["alert_triggers"]


def main(argv: Sequence[str] | None = None) -> int:
    """Print the YAML form, or ``--write`` it to deployments/triggers.yaml."""
    p = argparse.ArgumentParser(prog="python -m deployments.triggers", description=main.__doc__)
    p.add_argument("--write", action="store_true", help=f"write {TRIGGERS_YAML}")
    args = p.parse_args(argv)
    text = render_triggers_yaml()
    if args.write:
        TRIGGERS_YAML.write_text(text)
        print(f"wrote {TRIGGERS_YAML}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
