"""The skeleton every runbook shares (Prefect-aware, unlike the rest of :mod:`regionops`).

- :mod:`~regionops.runbook.params`: the parameter block of runbooks that change a cluster;
- :mod:`~regionops.runbook.context`: one run's lock, progress, approval, errors and report;
- :mod:`~regionops.runbook.approval`: the one typed approval form (approver, reason, phrase);
- :mod:`~regionops.runbook.locks`: the cluster lock (a Prefect concurrency lease);
- :mod:`~regionops.runbook.reporting`: the Slack thread and the report artifacts;
- :mod:`~regionops.runbook.common`, ``monitoring``, ``progress``, ``triggered_runs``: helpers.

It sits above ``tasks/`` (it submits observation and monitoring tasks); ``flows/`` holds
the runbooks only.
"""
