"""The lab's two small HTTP services: the Slack-compatible sink and the alert receiver.

The sink (:mod:`regionops.lab.slack_sink`) stands in for Slack's Web API; the alert
receiver takes Alertmanager's webhooks and starts runbooks on the lab's Prefect server.
"""

from __future__ import annotations

import secrets

from regionops.lab.component import ComponentStatus, LabComponent, Observation, Progress, http_service_status


class LabSlackSink(LabComponent):
    """The Slack sink: every message a runbook posts, kept in ``slack-messages.jsonl``."""

    def process_names(self) -> list[str]:
        """The one sink process."""
        return ["slack-sink"]

    def start(self, progress: Progress) -> None:
        """Start the sink unless it runs."""
        cfg = self.cfg
        self.start_process(
            "slack-sink",
            [
                self.python,
                "-m",
                "regionops.lab.slack_sink",
                "--host",
                "127.0.0.1",
                "--port",
                str(cfg.ports.slack),
                "--token-file",
                str(cfg.path("secrets", "slack-token")),
                "--store",
                str(cfg.path("slack-messages.jsonl")),
            ],
            cfg.ports.slack,
        )

    def status(self, seen: Observation) -> list[ComponentStatus]:
        """Whether the sink accepts messages."""
        port = self.cfg.ports.slack
        url = f"http://127.0.0.1:{port}"
        return [http_service_status("slack sink", f"{url}/api/", port, f"{url}/messages", "accepting messages")]


class LabAlertReceiver(LabComponent):
    """The alert receiver (labs made before it joined have no port for it, and run without it)."""

    def process_names(self) -> list[str]:
        """The one receiver process."""
        return ["alert-receiver"]

    def start(self, progress: Progress) -> None:
        """Make its token (once) and start it unless it runs."""
        cfg = self.cfg
        if not cfg.ports.alerts:
            return
        token_file = cfg.path("secrets", "alert-token")
        if not token_file.exists():
            token_file.write_text(secrets.token_hex(16))
            token_file.chmod(0o600)
        self.start_process(
            "alert-receiver",
            [
                self.python,
                "-m",
                "regionops.alerting.receiver",
                "--host",
                "127.0.0.1",
                "--port",
                str(cfg.ports.alerts),
                "--token-file",
                str(token_file),
                "--state-dir",
                str(cfg.path("state")),
                "--topology",
                str(cfg.topology_path),
                "--prefect-api-url",
                f"http://127.0.0.1:{cfg.ports.prefect}/api",
            ],
            cfg.ports.alerts,
            timeout=60,
        )

    def status(self, seen: Observation) -> list[ComponentStatus]:
        """Whether it accepts Alertmanager's webhooks (no line in a lab without its port)."""
        port = self.cfg.ports.alerts
        if not port:
            return []
        url = f"http://127.0.0.1:{port}"
        return [
            http_service_status(
                "alert receiver", f"{url}/alerts", port, f"{url}/healthz", "accepting Alertmanager webhooks"
            )
        ]
