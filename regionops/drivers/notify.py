"""Run reports in Slack: one thread per run, and a notifier that never stops a runbook.

A run calls :meth:`Notifier.start_thread` once (the root message), :meth:`Notifier.post`
for key steps (replies in the thread) and :meth:`Notifier.finish` at the end (a summary
reply, and the root message updated with the final status and the run's link).
:meth:`Notifier.alert` posts a standalone message.

The rule: a notifier never raises.  Slack being down, slow, or answering ``ok: false``
is logged as a warning, recorded in :attr:`SlackNotifier.failures` (for the run's
report) and returned as ``NotifyResult(ok=False, error=...)``; the runbook goes on.

Messages carry Block Kit blocks (header, mrkdwn sections, context) and a plain ``text``
fallback.  Caller text is mrkdwn: ``*bold*`` and Slack links ``<url|label>`` work, and
any other ``&``, ``<`` and ``>`` is escaped so stray brackets cannot break a message.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from regionops.errors import ConfigurationError
from regionops.topology import Topology

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 5.0
DEFAULT_COOLDOWN_SECONDS = 30.0  # how long to skip calls after Slack was unreachable
HEADER_LIMIT = 150  # Slack's limit for header block text
SECTION_LIMIT = 3000  # Slack's limit for section text
TEXT_LIMIT = 3500  # keep the fallback text well under Slack's 40k truncation

STATUS_EMOJI = {
    "running": ":arrows_counterclockwise:",
    "started": ":arrows_counterclockwise:",
    "succeeded": ":white_check_mark:",
    "success": ":white_check_mark:",
    "ok": ":white_check_mark:",
    "healthy": ":white_check_mark:",
    "failed": ":x:",
    "rolled back": ":leftwards_arrow_with_hook:",
    "crashed": ":x:",
    "problems found": ":warning:",
    "degraded": ":warning:",
    "cancelled": ":no_entry_sign:",
    "skipped": ":fast_forward:",
    "waiting for approval": ":raised_hand:",
    "dry run": ":test_tube:",
}
DEFAULT_EMOJI = ":information_source:"
ALERT_EMOJI = ":rotating_light:"


class ThreadRef(BaseModel):
    """Where a run's thread lives: the channel and the root message's ``ts``."""

    model_config = ConfigDict(frozen=True)

    channel: str
    ts: str


class NotifyResult(BaseModel):
    """What became of one notification.  ``error`` is Slack's error code or the exception."""

    model_config = ConfigDict(frozen=True)

    ok: bool
    ts: str | None = None
    error: str | None = None
    skipped: bool = False


@runtime_checkable
class Notifier(Protocol):
    """Reports a run to humans.  Implementations never raise."""

    failures: list[str]

    def start_thread(self, title: str, lines: list[str], status: str = "running") -> ThreadRef | None:
        """Post the run's root message; None when it could not be posted."""
        ...

    def post(self, thread: ThreadRef | None, text: str, blocks: list[dict[str, Any]] | None = None) -> NotifyResult:
        """Post a reply in the run's thread."""
        ...

    def finish(
        self,
        thread: ThreadRef | None,
        title: str,
        status: str,
        summary_lines: list[str],
        run_url: str | None = None,
    ) -> NotifyResult:
        """Post the summary reply and update the root message with the final status."""
        ...

    def alert(self, title: str, lines: list[str], run_url: str | None = None) -> NotifyResult:
        """Post a standalone message."""
        ...


# -- message building -------------------------------------------------------------------


# Slack's own markup that survives escaping: links <http://x|label>, mentions <@U1>, <!here>.
_SLACK_MARKUP = re.compile(r"<(?:(?:https?|mailto):[^\s<>|]+(?:\|[^<>]*)?|[@#!][^\s<>]+)>")


def _escape_plain(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_mrkdwn(text: str) -> str:
    """Escape ``&``, ``<`` and ``>`` as Slack's mrkdwn requires.

    Well-formed Slack links and mentions (``<https://x|label>``, ``<@U123>``,
    ``<!here>``) are kept as they are; every other angle bracket is escaped.
    """
    out: list[str] = []
    pos = 0
    for match in _SLACK_MARKUP.finditer(text):
        out.append(_escape_plain(text[pos : match.start()]))
        out.append(match.group(0))
        pos = match.end()
    out.append(_escape_plain(text[pos:]))
    return "".join(out)


def status_emoji(status: str) -> str:
    """The emoji shortcode for a run status (``succeeded`` -> ``:white_check_mark:``)."""
    return STATUS_EMOJI.get(status.strip().lower(), DEFAULT_EMOJI)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bullets(lines: list[str]) -> str:
    return "\n".join(f"• {escape_mrkdwn(line)}" for line in lines)


def _link(run_url: str, label: str = "View run") -> str:
    return f"<{_escape_plain(run_url)}|{label}>"


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": _clip(text, HEADER_LIMIT), "emoji": True}}


def _section(mrkdwn: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(mrkdwn, SECTION_LIMIT)}}


def _context(mrkdwn: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(mrkdwn, 2000)}]}


def build_message(
    title: str,
    lines: list[str],
    status: str | None = None,
    run_url: str | None = None,
    emoji: str | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """The ``(text, blocks)`` of a report message: header, status, bullet lines, run link."""
    emoji = emoji or (status_emoji(status) if status else DEFAULT_EMOJI)
    blocks: list[dict[str, Any]] = [_header(f"{emoji} {title}")]
    first = f"{emoji} *{escape_mrkdwn(title)}*"
    text_parts = [first + (f" — {escape_mrkdwn(status)}" if status else "")]
    if status:
        blocks.append(_section(f"*Status:* {emoji} {escape_mrkdwn(status)}"))
    if lines:
        blocks.append(_section(_bullets(lines)))
        text_parts.append(_bullets(lines))
    if run_url:
        blocks.append(_context(f":link: {_link(run_url)}"))
        text_parts.append(f"Run: {_escape_plain(run_url)}")
    return _clip("\n".join(text_parts), TEXT_LIMIT), blocks


# -- implementations --------------------------------------------------------------------


class NullNotifier:
    """A notifier that sends nothing (dry runs, no Slack configured).

    ``reason`` says why, and lands in :attr:`failures` when it is a problem (e.g. the
    Slack token could not be read) so the run's report still shows it.
    """

    def __init__(self, reason: str | None = None, *, problem: bool = False):
        self.reason = reason
        self.failures: list[str] = [reason] if (reason and problem) else []

    def start_thread(self, title: str, lines: list[str], status: str = "running") -> ThreadRef | None:
        """Send nothing; there is no thread."""
        return None

    def post(self, thread: ThreadRef | None, text: str, blocks: list[dict[str, Any]] | None = None) -> NotifyResult:
        """Send nothing."""
        return NotifyResult(ok=True, skipped=True)

    def finish(
        self,
        thread: ThreadRef | None,
        title: str,
        status: str,
        summary_lines: list[str],
        run_url: str | None = None,
    ) -> NotifyResult:
        """Send nothing."""
        return NotifyResult(ok=True, skipped=True)

    def alert(self, title: str, lines: list[str], run_url: str | None = None) -> NotifyResult:
        """Send nothing."""
        return NotifyResult(ok=True, skipped=True)


class SlackNotifier:
    """Reports to one Slack channel through a ``slack_sdk.WebClient``.  Never raises.

    Give the client a short ``timeout``: a call may wait that long when Slack is slow.
    After a connection error or timeout, further calls are skipped for
    ``cooldown_seconds`` (except the final summary), each recorded in :attr:`failures`.
    """

    def __init__(
        self,
        client: WebClient,
        channel: str,
        *,
        cooldown_seconds: float = DEFAULT_COOLDOWN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.client = client
        self.channel = channel
        self.failures: list[str] = []
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._unreachable_until = 0.0  # while Slack is unreachable, calls are skipped
        self._last_connection_error = ""
        self._root_lines: dict[str, list[str]] = {}  # root ts -> lines of the start message

    # -- the one place Slack is called ------------------------------------------------
    def _call(self, method: str, *, force: bool = False, **kwargs: Any) -> NotifyResult:
        """Call a WebClient method; turn every failure into ``NotifyResult(ok=False)``.

        After a connection error or timeout, calls are skipped for ``cooldown_seconds``
        (unless ``force``), so a dead or slow Slack costs a runbook one timeout, not
        one per step.  Slack's own ``ok: false`` answers do not trip this.
        """
        if not force and self._clock() < self._unreachable_until:
            error = f"skipped, Slack unreachable ({self._last_connection_error})"
            self.failures.append(f"{method}: {error}")
            log.debug("Slack %s skipped: %s", method, error)
            return NotifyResult(ok=False, skipped=True, error=error)
        try:
            response = getattr(self.client, method)(**kwargs)
        except SlackApiError as exc:
            error = self._redact(str(exc.response.get("error") or exc))
        except Exception as exc:  # noqa: BLE001 - Slack must never stop a runbook
            error = self._redact(f"{type(exc).__name__}: {exc}")
            self._last_connection_error = error
            self._unreachable_until = self._clock() + self.cooldown_seconds
        else:
            self._unreachable_until = 0.0
            return NotifyResult(ok=True, ts=response.get("ts"))
        self.failures.append(f"{method}: {error}")
        log.warning("Slack %s to %s failed (run continues): %s", method, self.channel, error)
        return NotifyResult(ok=False, error=error)

    def _redact(self, message: str) -> str:
        token = getattr(self.client, "token", None)
        return message.replace(token, "***") if token else message

    # -- the Notifier API -------------------------------------------------------------
    def start_thread(self, title: str, lines: list[str], status: str = "running") -> ThreadRef | None:
        """Post the run's root message; None (and a recorded failure) if Slack refused."""
        text, blocks = build_message(title, lines, status)
        result = self._call("chat_postMessage", channel=self.channel, text=text, blocks=blocks)
        if not result.ok or not result.ts:
            return None
        self._root_lines[result.ts] = list(lines)
        return ThreadRef(channel=self.channel, ts=result.ts)

    def post(self, thread: ThreadRef | None, text: str, blocks: list[dict[str, Any]] | None = None) -> NotifyResult:
        """Reply in the thread.  ``text`` is mrkdwn (escaped); ``blocks`` are sent as given.

        Without a thread (the start message failed) nothing is sent, so a Slack that
        comes back mid-run does not get step messages outside any thread.
        """
        if thread is None:
            return NotifyResult(ok=False, skipped=True, error="no thread: the run's start message was not posted")
        text = _clip(escape_mrkdwn(text), TEXT_LIMIT)
        if blocks is None:
            blocks = [_section(text)]
        return self._call("chat_postMessage", channel=thread.channel, thread_ts=thread.ts, text=text, blocks=blocks)

    def finish(
        self,
        thread: ThreadRef | None,
        title: str,
        status: str,
        summary_lines: list[str],
        run_url: str | None = None,
    ) -> NotifyResult:
        """Post the summary in the thread and update the root with status and link.

        Without a thread the summary is posted as a standalone message instead, so the
        outcome reaches the channel even if the start message did not.  The summary is
        tried even while Slack is considered unreachable (it may be back by now).  The
        result is ok only if every call succeeded; ``ts`` is the summary's.
        """
        text, blocks = build_message(f"{title}: summary", summary_lines, status, run_url)
        if thread is None:
            return self._call("chat_postMessage", force=True, channel=self.channel, text=text, blocks=blocks)
        summary = self._call(
            "chat_postMessage", force=True, channel=thread.channel, thread_ts=thread.ts, text=text, blocks=blocks
        )
        root_text, root_blocks = build_message(title, self._root_lines.get(thread.ts, []), status, run_url)
        update = self._call("chat_update", channel=thread.channel, ts=thread.ts, text=root_text, blocks=root_blocks)
        errors = [r.error for r in (summary, update) if r.error]
        return NotifyResult(ok=summary.ok and update.ok, ts=summary.ts, error="; ".join(errors) or None)

    def alert(self, title: str, lines: list[str], run_url: str | None = None) -> NotifyResult:
        """Post a standalone message (not in any run's thread)."""
        text, blocks = build_message(title, lines, run_url=run_url, emoji=ALERT_EMOJI)
        return self._call("chat_postMessage", channel=self.channel, text=text, blocks=blocks)


# -- wiring -----------------------------------------------------------------------------


def slack_client(token: str, base_url: str | None = None, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> WebClient:
    """A WebClient with a short timeout (slack_sdk's own retry: one, on connection errors)."""
    kwargs: dict[str, Any] = {"token": token, "timeout": timeout}
    if base_url:
        kwargs["base_url"] = base_url if base_url.endswith("/") else base_url + "/"
    return WebClient(**kwargs)


def notifier_for(topology: Topology, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> Notifier:
    """The notifier a topology asks for.

    :class:`NullNotifier` when no Slack is configured.  When the token cannot be
    resolved the run still goes on: a NullNotifier whose ``failures`` names the problem.
    """
    slack = topology.notifications.slack
    if slack is None:
        return NullNotifier("Slack is not configured")
    try:
        token = slack.token.resolve()
    except ConfigurationError as exc:
        log.warning("Slack notifications disabled for this run: %s", exc)
        return NullNotifier(f"slack token: {exc}", problem=True)
    return SlackNotifier(slack_client(token, slack.base_url, timeout), slack.channel)
