"""Monitoring as code: Prometheus, postgres_exporter and Alertmanager configuration from the topology.

- :mod:`regionops.monitoring.prometheus`: the scrape config (one postgres_exporter per
  node, every regional app, the Pushgateway; each target labelled with region, cluster
  and node) and the threshold rules the topology decides.
- :mod:`regionops.monitoring.alertmanager`: routes (runbook alerts to the alert receiver,
  every alert to Slack) and inhibitions.
- :mod:`regionops.monitoring.tools`: which binary each piece needs and its Debian package.

The alert rules themselves are static files under ``deployments/monitoring/rules`` with
``promtool test rules`` tests beside them; ``python -m regionops.monitoring`` writes the
generated files (the shipped example, or a directory for one environment).
"""

from __future__ import annotations

from pathlib import Path

# The shipped monitoring files live in the checkout, beside the other deployment files.
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "deployments" / "monitoring"
RULES_DIR = SHIPPED_DIR / "rules"
EXPORTER_QUERIES = SHIPPED_DIR / "postgres_exporter_queries.yaml"
