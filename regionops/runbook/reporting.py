"""How every runbook reports: a Slack thread per run, Prefect artifacts, and failure hooks.

A :class:`RunReporter` collects each step's sentence.  It posts the start, key steps
and a final summary into one Slack thread, and writes a markdown report (plus tables)
as Prefect artifacts.  Slack trouble never fails a run: the notifier swallows it, and
the report says that Slack delivery failed.
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

from prefect import get_run_logger
from prefect.artifacts import Artifact, create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run as current_run

from regionops.drivers.notify import NullNotifier, ThreadRef, notifier_for
from regionops.topology import Topology, load_topology

# Flow runs whose failure the flow body already reported; the failure hook skips them.
_REPORTED_RUNS: set[str] = set()


def run_url(topology: Topology | None) -> str | None:
    """Link to the current flow run in the Prefect UI (None outside a flow run)."""
    run_id = current_run.get_id()
    if not run_id:
        return None
    link = topology.prefect.run_link(run_id) if topology is not None else None
    return link or current_run.get_ui_url()


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a run context, fall back to module logging
        return logging.getLogger(__name__)


def artifact_key(text: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Render rows (dicts with the same keys) as a markdown table."""
    if not rows:
        return "_none_\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join("" if row.get(c) is None else str(row.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


class RunReporter:
    """Collects a run's steps and reports them to Slack and the Prefect UI."""

    def __init__(self, topology: Topology, runbook: str, title: str, *, slack: bool = True):
        self.topology = topology
        self.runbook = runbook
        self.title = title
        self.notifier = notifier_for(topology) if slack else NullNotifier("Slack reporting off for this run")
        self.thread: ThreadRef | None = None
        self.steps: list[tuple[datetime, str]] = []
        self.started_at = datetime.now(UTC)
        self.url = run_url(topology)
        self.log = _logger()
        self.approval: str | None = None  # who approved and why, once someone did
        self.status: str | None = None  # set by finish(): the report is written
        # Inside a RunbookRun the report's artifacts are written while the run winds down (lifting
        # its silence, freeing its locks) and waited for at its very end (flush_artifacts).
        self.defer_artifacts = False
        self._pending: list[Future[Any]] = []
        # Slack is posted to by one thread of its own, in order: a runbook's step never waits for
        # Slack (100-300 ms a message in production; a failover's steps are its RTO).
        self._slack: ThreadPoolExecutor | None = None
        self._slack_pending: list[Future[Any]] = []

    def start(self, lines: list[str] | None = None) -> None:
        """Open the run's Slack thread (posted in the background, before every step's reply)."""
        text = (lines or []) + self._link_lines()

        def open_thread() -> None:
            self.thread = self.notifier.start_thread(self.title, text, "running")

        self._to_slack(open_thread)

    def _to_slack(self, job: Callable[[], Any]) -> None:
        if self._slack is None:
            self._slack = ThreadPoolExecutor(1, thread_name_prefix="slack")
        self._slack_pending.append(self._slack.submit(job))

    def post_to_thread(self, sentence: str) -> None:
        """Reply in the run's Slack thread, in order, without waiting (nothing when it could not be opened)."""
        self._to_slack(lambda: self.thread is not None and self.notifier.post(self.thread, sentence))

    def flush_slack(self) -> None:
        """Wait until every queued Slack message is posted (the notifier never raises)."""
        pending, self._slack_pending = self._slack_pending, []
        for future in pending:
            future.result()

    def _link_lines(self) -> list[str]:
        return [f"<{self.url}|Prefect run>"] if self.url else []

    def step(self, sentence: str, *, slack: bool = True) -> None:
        """Record one step's result; log it and, when the thread is open, reply in it."""
        self.steps.append((datetime.now(UTC), sentence))
        self.log.info(sentence)
        if slack:
            self.post_to_thread(sentence)

    def alert(self, title: str, lines: list[str]) -> None:
        """A standalone Slack message (for runs that only speak up when something is wrong)."""
        self.notifier.alert(title, lines, self.url)

    def finish(
        self,
        status: str,
        summary: list[str],
        *,
        details: str = "",
        tables: dict[str, list[dict[str, Any]]] | None = None,
    ) -> str:
        """Write the markdown report and tables; post the summary to Slack.  Returns the markdown."""
        self.status = status
        self.flush_slack()  # the summary comes after every step, and the report lists Slack's failures
        if self.thread is not None:
            self.notifier.finish(self.thread, self.title, status, summary, self.url)
        markdown = self.markdown(status, summary, details, tables or {})
        self._artifacts(markdown, tables or {})
        run_id = current_run.get_id()
        if run_id:
            _REPORTED_RUNS.add(str(run_id))
        return markdown

    def markdown(self, status: str, summary: list[str], details: str, tables: dict[str, list[dict[str, Any]]]) -> str:
        """The run's report as markdown."""
        finished = datetime.now(UTC)
        out = [
            f"# {self.title}: {status}",
            "",
            f"Started {self.started_at:%Y-%m-%d %H:%M:%S} UTC, "
            f"took {(finished - self.started_at).total_seconds():.1f} s"
            f" (topology `{self.topology.name}`).",
            "",
            "## Summary",
            *[f"- {line}" for line in summary],
            "",
        ]
        if self.approval:
            out += ["## Approval", f"- {self.approval}", ""]
        if self.steps:
            out += ["## Steps", *[f"- `{t:%H:%M:%S}` {s}" for t, s in self.steps], ""]
        for name, rows in tables.items():
            out += [f"## {name}", markdown_table(rows)]
        if details:
            out += [details, ""]
        failures = getattr(self.notifier, "failures", [])
        if failures:
            out += ["## Slack delivery", *[f"- failed: {f}" for f in failures], ""]
        return "\n".join(out)

    def _artifacts(self, markdown: str, tables: dict[str, list[dict[str, Any]]]) -> None:
        if not current_run.get_id():
            return
        jobs: list[Callable[[], Any]] = [
            partial(
                create_markdown_artifact,
                key=artifact_key(f"{self.runbook}-report"),
                markdown=markdown,
                description=f"{self.title} report",
            )
        ]
        jobs += [
            partial(create_table_artifact, key=artifact_key(f"{self.runbook}-{name}"), table=rows, description=name)
            for name, rows in tables.items()
            if rows
        ]
        # Side by side: each is one API call, and a run's end (a drill's subflows' too) waits for them.
        # Each thread runs in a copy of this run's context, so the artifact belongs to this run.
        pool = ThreadPoolExecutor(len(jobs), thread_name_prefix="artifacts")
        self._pending += [pool.submit(contextvars.copy_context().run, job) for job in jobs]
        pool.shutdown(wait=False)
        if not self.defer_artifacts:
            self.flush_artifacts()

    def flush_artifacts(self) -> None:
        """Wait until the report's artifacts are written (a failure is logged, never raised)."""
        pending, self._pending = self._pending, []
        for future in pending:
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - a UI artifact must not fail the runbook
                self.log.warning("could not create report artifacts: %s", exc)


def append_trend(key: str, row: dict[str, Any], description: str, keep: int = 200) -> list[dict[str, Any]]:
    """Add ``row`` to the table artifact under the stable ``key`` (one row per run, across runs); returns the rows.

    A trend that cannot be read starts again; one that cannot be written is logged: a
    report never fails on its trend.
    """
    log = _logger()
    rows: list[dict[str, Any]] = []
    try:
        # Called from a flow's sync code: Artifact.get runs synchronously (its stub also admits a coroutine).
        previous = cast("Artifact | None", Artifact.get(key))
        if previous is not None and previous.data:
            data = previous.data if isinstance(previous.data, list) else json.loads(str(previous.data))
            rows = [r for r in data if isinstance(r, dict)]
    except Exception as exc:  # noqa: BLE001 - a missing trend starts a new one
        log.warning("could not read the trend %s: %s", key, exc)
    rows = [*rows, row][-keep:]
    try:
        create_table_artifact(key=key, table=rows, description=description)
    except Exception as exc:  # noqa: BLE001 - the report must not fail on the trend
        log.warning("could not write the trend %s: %s", key, exc)
    return rows


def topology_from_parameters(parameters: dict[str, Any]) -> Topology | None:
    params = parameters.get("params") or {}
    path = params.get("topology") if isinstance(params, dict) else getattr(params, "topology", None)
    try:
        return load_topology(path)
    except Exception:  # noqa: BLE001 - the hook reports what it can
        return None


def report_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow state hook (on_failure, on_crashed): tell Slack unless the flow already did."""
    if str(flow_run.id) in _REPORTED_RUNS and state.name != "Crashed":
        return
    topology = topology_from_parameters(flow_run.parameters or {})
    if topology is None:
        logging.getLogger(__name__).warning("cannot report %s of %s: topology not loadable", state.name, flow.name)
        return
    notifier_for(topology).alert(
        f"{flow.name} {state.name.lower()}",
        [state.message or "no message", f"run {flow_run.name}"],
        topology.prefect.run_link(flow_run.id),
    )
