"""The skeleton every runbook shares (Prefect-aware, unlike the rest of :mod:`regionops`).

- :mod:`~regionops.runbook.params`: the parameter block of runbooks that change a cluster;
- :mod:`~regionops.runbook.context`: one run's lock, journal, progress, approval, errors and report;
- :mod:`~regionops.runbook.journal`: what a cancelled or crashed run must undo, and its cancel hook;
- :mod:`~regionops.runbook.approval`: the one typed approval form (approver, reason, phrase);
- :mod:`~regionops.runbook.locks`: the cluster lock (a Prefect concurrency lease);
- :mod:`~regionops.runbook.reporting`: the Slack thread and the report artifacts;
- :mod:`~regionops.runbook.drill`, ``drill_report``: the DR drill's parts (plan, step results, verdict) and report;
- :mod:`~regionops.runbook.common`, ``monitoring`` (result gauges), ``triggered_runs``: helpers.

It imports nothing from ``tasks/`` (steps through tasks, such as the planned-work
silence, are in :mod:`tasks.runbook_monitoring`); ``flows/`` holds the runbooks only.
"""
