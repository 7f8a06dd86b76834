"""The project's exception tree.

Library errors (psycopg, botocore, httpx, slack_sdk) are translated into these once,
at the driver boundary, with ``raise ... from exc``.  Retry policies look at the type:
only :class:`TransientError` is worth another try.
"""

from __future__ import annotations


class RunbookError(Exception):
    """Base of every error a runbook raises on purpose."""


class ConfigurationError(RunbookError):
    """The topology or a parameter is wrong; nothing was changed."""


class TopologyError(ConfigurationError):
    """A topology file failed validation.  ``problems`` lists every error found."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"topology {source} is invalid ({len(self.problems)} problem(s)):\n{lines}")


class PreconditionFailed(RunbookError):
    """A check that must hold before any change did not hold; nothing was changed."""


class ResidencyViolation(PreconditionFailed):
    """Moving data to this place would break the cluster's residency rule."""


class TransientError(RunbookError):
    """A failure that may pass on its own (timeouts, connection refused): retry it."""


class ExternalSystemError(RunbookError):
    """An external system answered with an error that retrying will not fix."""


class VerificationFailed(RunbookError):
    """A result was checked and found wrong (checksum, fingerprint, replication)."""


class DeadlineExceeded(TransientError):
    """A wait ran past its deadline."""


class ApprovalRejected(RunbookError):
    """A human declined the approval the runbook asked for."""


class RolledBack(RunbookError):
    """A change failed (or was rejected) and was undone; the message says why and what was restored."""


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` is worth retrying (used by Prefect ``retry_condition_fn``)."""
    return isinstance(exc, TransientError)


class NodeStepFailed(RunbookError):
    """A node step run on the node's regional worker failed, crashed, was refused or did not finish.

    ``run_url`` links the child run (its logs say what happened on the node's host).
    """

    def __init__(self, message: str, *, node: str, operation: str, run_url: str | None = None):
        self.node = node
        self.operation = operation
        self.run_url = run_url
        super().__init__(message + (f" (node run: {run_url})" if run_url else ""))
