"""``python -m regionops.monitoring``: write the monitoring configuration for a topology.

    python -m regionops.monitoring --topology prod.yaml --out /etc/prometheus/regionops \\
        --receiver-token-file /etc/alertmanager/secrets/regionops-alert-token \\
        --slack-token-file /etc/alertmanager/secrets/slack-bot-token
    python -m regionops.monitoring --write-shipped   # refresh deployments/monitoring/*.yml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from regionops.errors import RunbookError
from regionops.monitoring import SHIPPED_DIR
from regionops.monitoring.files import AlertmanagerInputs, render, shipped_files, write
from regionops.topology import load_topology


def main(argv: list[str] | None = None) -> int:
    """Write the files; print each path."""
    p = argparse.ArgumentParser(prog="python -m regionops.monitoring", description=__doc__.splitlines()[0])
    p.add_argument("--topology", help="topology file (default $REGIONOPS_TOPOLOGY or the lab's)")
    p.add_argument("--out", help="directory to write prometheus.yml, rules/, alertmanager.yml into")
    p.add_argument("--receiver-token-file", default="/etc/alertmanager/secrets/regionops-alert-token")
    p.add_argument("--slack-token-file", help="bot token file for chat.postMessage (omit for a webhook URL)")
    p.add_argument("--slack-api-url", default="https://slack.com/api/chat.postMessage")
    p.add_argument("--write-shipped", action="store_true", help="regenerate the files under deployments/monitoring")
    args = p.parse_args(argv)
    try:
        if args.write_shipped:
            paths = write(SHIPPED_DIR, shipped_files())
        else:
            if not args.out:
                p.error("--out is required (or --write-shipped)")
            topology = load_topology(args.topology)
            files = render(
                topology,
                args.topology or "the default topology",
                AlertmanagerInputs(
                    receiver_token_file=args.receiver_token_file,
                    slack_token_file=args.slack_token_file,
                    slack_api_url=args.slack_api_url,
                ),
            )
            paths = write(Path(args.out), files)
    except RunbookError as exc:
        print(f"regionops.monitoring: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
