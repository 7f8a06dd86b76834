"""Alertmanager's configuration: runbook alerts to the alert receiver, every alert to Slack.

The routes that feed the receiver are built from :data:`regionops.alerting.intents.ALERT_INTENTS`
(the one mapping of alert names to runbooks), so Alertmanager and the receiver cannot
disagree about which alerts start runbooks.  While a cluster's primary is down, its
replica alerts are inhibited: they follow from the primary's death, and the failover
repoints the replicas itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from regionops.alerting.intents import ALERT_INTENTS
from regionops.monitoring.prometheus import _seconds

RUNBOOK_RECEIVER = "regionops-runbooks"
SLACK_RECEIVER = "slack"
# Replica alerts a dead primary explains (inhibited while PostgresPrimaryDown fires).
INHIBITED_BY_PRIMARY_DOWN = ("PostgresReplicationBroken", "PostgresReplicaLagging", "PostgresNodeDown")


@dataclass(frozen=True)
class Timings:
    """How quickly Alertmanager notifies: production's defaults, or the lab's sub-second ones.

    The root route (Slack, for humans) batches: ``group_wait`` collects an incident's
    alerts into one message.  The runbook route does not wait: the receiver and the
    trigger window absorb duplicates, so every second of ``runbook_group_wait`` would
    be a second of downtime before the failover starts.  ``runbook_group_interval``
    is how late a *new* alert of an existing group (a second replica's resync) goes out.
    """

    group_wait: float = 10
    group_interval: float = 60
    repeat_interval: float = 4 * 3600
    resolve_timeout: float = 300
    runbook_group_wait: float = 0
    runbook_group_interval: float = 5


LAB_TIMINGS = Timings(
    group_wait=0.5,
    group_interval=2,
    repeat_interval=3600,
    resolve_timeout=300,
    runbook_group_wait=0,
    runbook_group_interval=1,
)


def runbook_alertnames() -> list[str]:
    """The alert names that start runbooks, from the receiver's own mapping."""
    return sorted(ALERT_INTENTS)


def alertmanager_config(
    *,
    receiver_url: str,
    receiver_token_file: str,
    slack_api_url: str,
    slack_channel: str,
    slack_token_file: str | None,
    timings: Timings = Timings(),
) -> dict[str, Any]:
    """The whole ``alertmanager.yml`` as a mapping.

    ``slack_api_url`` is Slack's ``chat.postMessage`` (with a bot token from
    ``slack_token_file``) or an incoming-webhook URL (then no token file).
    """
    names = "|".join(runbook_alertnames())
    slack: dict[str, Any] = {
        "api_url": slack_api_url,
        "channel": slack_channel,
        "send_resolved": True,
        "title": '[{{ .Status | toUpper }}{{ if eq .Status "firing" }}:{{ .Alerts.Firing | len }}{{ end }}] '
        "{{ .CommonLabels.alertname }}{{ with .CommonLabels.cluster }} cluster {{ . }}{{ end }}"
        "{{ with .CommonLabels.region }} region {{ . }}{{ end }}",
        "text": "{{ range .Alerts }}{{ .Annotations.summary }}"
        "{{ with .Annotations.runbook }} (runbook: {{ . }}){{ end }}\n{{ end }}",
    }
    if slack_token_file:
        slack["http_config"] = {"authorization": {"type": "Bearer", "credentials_file": slack_token_file}}
    return {
        "global": {"resolve_timeout": _seconds(timings.resolve_timeout)},
        "route": {
            "receiver": SLACK_RECEIVER,
            "group_by": ["alertname", "cluster", "region"],
            "group_wait": _seconds(timings.group_wait),
            "group_interval": _seconds(timings.group_interval),
            "repeat_interval": _seconds(timings.repeat_interval),
            "routes": [
                {
                    # Runbook alerts go to the receiver AND on to Slack (continue).
                    "receiver": RUNBOOK_RECEIVER,
                    "matchers": [f'alertname=~"{names}"'],
                    "group_by": ["alertname", "cluster"],
                    "group_wait": _seconds(timings.runbook_group_wait),
                    "group_interval": _seconds(timings.runbook_group_interval),
                    "continue": True,
                },
                {"receiver": SLACK_RECEIVER},
            ],
        },
        "inhibit_rules": [
            {
                "source_matchers": ['alertname="PostgresPrimaryDown"'],
                "target_matchers": [f'alertname=~"{"|".join(INHIBITED_BY_PRIMARY_DOWN)}"'],
                "equal": ["cluster"],
            }
        ],
        "receivers": [
            {
                "name": RUNBOOK_RECEIVER,
                "webhook_configs": [
                    {
                        "url": receiver_url,
                        "send_resolved": True,
                        "max_alerts": 0,
                        "http_config": {"authorization": {"type": "Bearer", "credentials_file": receiver_token_file}},
                    }
                ],
            },
            {"name": SLACK_RECEIVER, "slack_configs": [slack]},
        ],
    }
