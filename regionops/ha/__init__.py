"""Cluster-level steps of the primary-moving runbooks (switchover, failover, replica resync).

Each function is one step a runbook takes over SQL or DNS, needs no access to a node's
disk (that is :mod:`regionops.node`), and returns a typed result whose ``sentence()``
goes into the run's report.  No Prefect here: ``tasks/`` wraps these thinly.
"""
