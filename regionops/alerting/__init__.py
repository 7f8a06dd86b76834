"""The alert receiver: Alertmanager's webhooks in, Prefect events out (a runtime service).

Prefect's self-hosted server has no webhooks, so this receiver stands between Prometheus
Alertmanager and the deployment triggers.  Run it with ``python -m regionops.alerting.receiver``.

- :mod:`.payload`: the webhook body (version 4), validated;
- :mod:`.intents`: which alerts start which runbook, and the event a firing alert becomes
  (:mod:`deployments.triggers` builds the triggers that match them from the same table);
- :mod:`.ledger`: what was already sent, so an alert storm or a retry starts one run;
- :mod:`.emitter`: sending the events to the Prefect server;
- :mod:`.processing`: one notification in, one answer per alert out;
- :mod:`.receiver`: the HTTP endpoint (bearer token, size limit) and the command line.

It imports nothing from ``flows/``, ``tasks/`` or ``deployments/``.
"""
