"""The ``regionops`` command: the lab (up, status, down) and running a runbook locally.

Exit codes of ``regionops run``: 0 the runbook succeeded; 1 it failed (or bad input);
3 it completed but reports problems (region health found something wrong).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from regionops.errors import RunbookError
from regionops.model.faults import FAULT_NAMES
from regionops.topology import PrefectSettings, default_lab_dir

REGION_FAULT_NAMES = ("region-outage", "region-partition", "wan-degraded", "ops-outage")  # regionops.lab.region_faults

EXIT_OK, EXIT_FAILED, EXIT_PROBLEMS = 0, 1, 3


def _lab(args: argparse.Namespace):
    from regionops.lab.lab import Lab

    lab_dir = Path(args.lab_dir) if args.lab_dir else default_lab_dir()
    lab = Lab.open(
        lab_dir,
        base_port=getattr(args, "base_port", None),
        free_ports=getattr(args, "free_ports", False),
        wan=getattr(args, "wan", None),
    )
    if getattr(args, "seed_rows", None) is not None:
        lab.cfg.seed_rows = args.seed_rows
    return lab


def _print_status(status: Any, as_json: bool) -> None:
    if as_json:
        print(status.model_dump_json(indent=2))
        return
    print(f"lab {status.lab_dir}: {'healthy' if status.healthy else 'NOT healthy'}")
    width = max(len(c.name) for c in status.components)
    for c in status.components:
        mark = "ok " if c.healthy else ("!! " if c.running else "-- ")
        print(f"  {mark}{c.name:<{width}}  {c.endpoint:<28} {c.detail}")
    if status.prefect_ui:
        print(f"  Prefect UI: {status.prefect_ui}")
    if status.cluster and not status.cluster_healthy:
        print(f"cluster: {status.cluster}")
        for advice in status.advice:
            print(f"  to repair: {advice}")


def cmd_lab(args: argparse.Namespace) -> int:
    """lab up | status | down."""
    lab = _lab(args)
    if args.lab_command == "up":
        status = lab.up(
            progress=print,
            with_prefect=not args.no_prefect,
            with_monitoring=args.monitoring,
            with_workers=not (args.no_prefect or args.no_workers),
        )
        _print_status(status, args.json)
        print(f"topology: {lab.cfg.topology_path}")
        # Without Prefect only its components may be down; the cluster must be healthy either way.
        return EXIT_OK if status.healthy or (args.no_prefect and status.cluster_healthy) else EXIT_FAILED
    if args.lab_command == "status":
        status = lab.status()
        _print_status(status, args.json)
        return EXIT_OK if status.healthy else EXIT_FAILED
    if args.lab_command in ("fault", "heal"):
        return _lab_fault(lab, args)
    held = lab.down(progress=print, purge=args.purge)
    if held:
        print("ports still held: " + ", ".join(held), file=sys.stderr)
        return EXIT_FAILED
    print("lab stopped; no lab port is held")
    return EXIT_OK


def _lab_fault(lab: Any, args: argparse.Namespace) -> int:
    """lab fault NAME [--node N] | lab heal: the DR drill's faults, by hand."""
    from regionops.decisions import find_primary
    from regionops.ha.writer import writer_node
    from regionops.lab.config import LAB_CLUSTER
    from regionops.lab.faults import LabFaultInjector
    from regionops.lab.region_faults import REGION_FAULTS, heal_regions, inject_ops_outage, inject_region_fault

    topology = lab.topology()
    injector = LabFaultInjector(topology, lab.cfg.lab_dir)
    if args.lab_command == "heal":
        for line in [*heal_regions(lab), *injector.heal(LAB_CLUSTER)]:
            print(line)
        return EXIT_OK
    # With --region a fault acts on the whole region (labs made with --wan); region-outage without it
    # is the DR drill's node-level fault (the primary's node and its region's app).
    if args.name in REGION_FAULTS and (args.region or args.name not in FAULT_NAMES):
        if not args.region:
            raise RunbookError(f"{args.name} acts on a whole region: name it with --region (eu, us or apac)")
        for line in inject_region_fault(lab, args.name, args.region):
            print(line)
        print("undo with `regionops lab heal`")
        return EXIT_OK
    if args.name == "ops-outage":
        for line in inject_ops_outage(lab):
            print(line)
        print("undo with `regionops lab heal` (it starts the Prefect server again)")
        return EXIT_OK
    if args.name == "planned-switchover":
        print("planned-switchover injects no fault: run `regionops run switchover`")
        return EXIT_OK
    node = args.node
    if node is None:
        cluster = topology.clusters[LAB_CLUSTER]
        view = find_primary(topology, LAB_CLUSTER, lab.observe_nodes(), writer_node(topology, LAB_CLUSTER))
        if view.primary is None:
            raise RunbookError(f"cannot tell which node is the primary ({view.reason}); name one with --node")
        node = (
            view.primary
            if args.name != "replica-loss"
            else min((n for n in cluster.nodes if n != view.primary), key=lambda n: cluster.nodes[n].priority)
        )
    print(injector.inject(args.name, LAB_CLUSTER, node).sentence())
    print("undo with `regionops lab heal`, or let the runbooks repair it (failover, replica-resync)")
    return EXIT_OK


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are JSON when they parse as JSON, else strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise RunbookError(f"--set {pair!r}: expected key=value")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def build_params(model: type[BaseModel], values: dict[str, Any], runbook_name: str) -> Any:
    """Validate ``values`` against the runbook's parameter model with errors naming each key."""
    from pydantic import ValidationError

    unknown = sorted(set(values) - set(model.model_fields))
    if unknown:
        raise RunbookError(
            f"{runbook_name} has no parameter {', '.join(unknown)}; it takes: {', '.join(model.model_fields)}"
        )
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise RunbookError(f"bad parameters for {runbook_name}: {problems}") from None


def _use_lab_prefect_server() -> None:
    """Point Prefect at the lab's server when one runs and nothing else was configured."""
    if os.environ.get("PREFECT_API_URL"):
        return
    from regionops.lab.config import LabConfig
    from regionops.lab.processes import port_open

    cfg = LabConfig.load(default_lab_dir())
    # At the ops site's address: reachable from the host and from inside any site of a WAN lab.
    if cfg and port_open(cfg.ports.prefect, cfg.control_host()):
        _use_lab_env(cfg)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _use_lab_env(cfg: Any) -> None:
    """The lab's Prefect API and the storage its executors share with runbooks (before Prefect is imported)."""
    from regionops.lab.prefect_server import lab_env

    env = lab_env(cfg)
    for key in ("PREFECT_API_URL", "PREFECT_RESULTS_LOCAL_STORAGE_PATH"):
        os.environ[key] = env[key]


def cmd_run(args: argparse.Namespace) -> int:
    """Start one runbook's deployment and follow it (``--here``: run it in this process); print its typed result."""
    from flows.registry import runbook
    from regionops.runbook import remote_run

    rb = runbook(args.name)
    values = parse_sets(args.set or [])
    if args.topology:
        values["topology"] = str(Path(args.topology).absolute())
    _use_lab_prefect_server()
    flow, model = rb.load()
    params = build_params(model, values, rb.name)  # bad input is named here, before anything starts
    if args.here:
        print(f"running {rb.name} here, in this process: {remote_run.where_this_runs()}", file=sys.stderr)
        state = flow(params, return_state=True)
    else:
        say = (lambda line: print(line, file=sys.stderr, flush=True)) if not args.json else (lambda _line: None)
        state = remote_run.start_and_follow(rb.name, args.deployment, params, say)
    if not state.is_completed():
        message = remote_run.failure_message(state, in_process=args.here)
        print(
            json.dumps({"runbook": rb.name, "state": state.name, "error": message})
            if args.json
            else f"{rb.name} {state.name.lower()}: {message}",
            file=sys.stdout if args.json else sys.stderr,
        )
        return EXIT_FAILED
    result = state.result()
    if args.json:
        print(result.model_dump_json(indent=2) if hasattr(result, "model_dump_json") else json.dumps(result))
    else:
        print(result.sentence() if hasattr(result, "sentence") else result)
    ok = getattr(result, "ok", getattr(result, "healthy", True))
    return EXIT_OK if ok else EXIT_PROBLEMS


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the lab (a new one with the realistic WAN), run region health and a primary-crash DR drill
    where production runs runbooks (the lab's ops site, through their deployments), and say where to look."""
    args.wan = args.wan or _demo_wan(Path(args.lab_dir) if args.lab_dir else default_lab_dir())
    lab = _lab(args)
    status = lab.up(progress=print, with_workers=True)  # one worker per region pool, as `lab up`
    _print_status(status, as_json=False)
    if not status.healthy:
        print(
            f"regionops: the lab is not healthy; see `regionops lab status` and the logs in {lab.cfg.lab_dir / 'logs'}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    _use_lab_env(lab.cfg)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.region_health import RegionHealthParams
    from regionops.runbook.remote_run import start_and_follow

    def say(line: str) -> None:
        print(f"  {line}", flush=True)

    print(f"\nrunning the region-health runbook on the lab (WAN {lab.cfg.wan}), through its deployment ...")
    state = start_and_follow("region-health", "lab", RegionHealthParams(topology=str(lab.cfg.topology_path)), say)
    ui = f"http://127.0.0.1:{lab.cfg.ports.prefect}"
    runs = PrefectSettings(ui_url=ui)
    if state.is_completed():
        print(f"\nresult: {state.result().sentence()}")
    else:
        print(f"\nregion-health {state.type.value.lower()}: {state.message}", file=sys.stderr)
        return EXIT_FAILED
    drill_state = _demo_drill(lab, say)
    drill_ok = drill_state.is_completed() and drill_state.result().ok
    print(
        "\nwhere to look:\n"
        f"  Prefect UI:           {ui}\n"
        f"  region-health run:    {runs.run_link(state.state_details.flow_run_id)}  (Artifacts tab)\n"
        f"  DR drill run/report:  {runs.run_link(drill_state.state_details.flow_run_id)}  (Artifacts tab)\n"
        f"  all reports, trend:   {ui}/artifacts\n"
        f"  Slack messages:       http://127.0.0.1:{lab.cfg.ports.slack}/messages\n"
        f"  topology file:        {lab.cfg.topology_path}\n"
        "  run a runbook:        .venv/bin/regionops run region-health   (or dr-drill --set scenario=primary-freeze)\n"
        "  stop the lab:         .venv/bin/regionops lab down   (add --purge to remove its state)"
    )
    return EXIT_OK if drill_ok else EXIT_FAILED


def _demo_wan(lab_dir: Path) -> str | None:
    """The demo's WAN: a lab that exists keeps its own; a new one gets the realistic WAN where it can be built."""
    from regionops.lab.config import LabConfig
    from regionops.monitoring.tools import WAN_TOOLS, missing_tools

    if LabConfig.load(lab_dir) is not None:
        return None
    missing = missing_tools(WAN_TOOLS)
    if os.geteuid() == 0 and not missing:
        return "realistic"
    why = "it needs root" if os.geteuid() != 0 else "; ".join(t.missing() for t in missing)
    print(f"note: the demo's lab runs without the WAN (--wan off): {why}")
    return "off"


def _demo_drill(lab: Any, say: Callable[[str], None]) -> Any:
    """A primary-crash DR drill on the lab, run through its deployment; its RTO and RPO printed."""
    from flows.dr_drill import DrillParams
    from regionops.runbook.remote_run import start_and_follow

    print("\nrunning a primary-crash DR drill (eu-1 is killed, failover, measured, rolled back) ...")
    params = DrillParams(topology=str(lab.cfg.topology_path), scenario="primary-crash", confirmation_seconds=2)
    state = start_and_follow("dr-drill", "lab", params, say)
    if not state.is_completed():
        print(f"dr-drill {state.type.value.lower()}: {state.message}", file=sys.stderr)
        return state
    result = state.result()
    m = result.measurement
    print(f"\nresult: {result.sentence()}")
    if m is not None:
        print(
            f"  RTO {m.rto_seconds} s (fault -> first acknowledged write), {m.rpo_sentence()}; "
            "objectives: " + ", ".join(v.sentence() for v in result.verdicts)
        )
    return state


def cmd_fence(args: argparse.Namespace) -> int:
    """fence list | clear: the shared fence records of a cluster (the cluster's home bucket)."""
    import getpass
    import socket

    from regionops.ha.fencing import Fencer, FenceStore
    from regionops.ha.unfence import unfence
    from regionops.topology import load_topology

    topology = load_topology(args.topology)
    cluster, _ = topology.cluster(args.cluster)
    if args.fence_command == "list":
        fenced = FenceStore.for_topology(topology).fenced(cluster)
        for marker in fenced.values():
            print(marker.sentence())
        if not fenced:
            print(f"no node of {cluster} is fenced")
        return EXIT_OK
    by = Fencer(
        runbook=f"regionops fence clear (by {getpass.getuser()})",
        worker_host=socket.gethostname(),
        worker_region=os.environ.get("REGIONOPS_REGION"),
    )
    cleared = unfence(topology, cluster, args.node, reason=args.reason, confirm=args.confirm, by=by)
    print(cleared.sentence())
    return EXIT_OK


def make_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="regionops", description="Runbooks as code for a three-region PostgreSQL app."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    lab = sub.add_parser("lab", help="the local three-region lab")
    lab_sub = lab.add_subparsers(dest="lab_command", required=True)
    for name, helptext in (
        ("up", "start the lab (idempotent)"),
        ("status", "show every component"),
        ("down", "stop every lab process"),
    ):
        p = lab_sub.add_parser(name, help=helptext)
        p.add_argument("--lab-dir", help="lab state directory (default $REGIONOPS_LAB_DIR or ./.lab)")
        p.add_argument("--json", action="store_true", help="print status as JSON")
        if name == "up":
            p.add_argument("--base-port", type=int, help="first port of the lab's range (first up only)")
            p.add_argument("--free-ports", action="store_true", help="pick free ports (first up only)")
            p.add_argument(
                "--wan",
                help="the WAN between the regions: realistic (AWS inter-region round trips), scaled:F "
                "(those times F), off (one loopback network); default: as the lab was made, initially off",
            )
            p.add_argument("--no-prefect", action="store_true", help="skip the Prefect server")
            p.add_argument(
                "--no-workers", action="store_true", help="skip the work pools and the one process worker per region"
            )
            p.add_argument(
                "--seed-rows",
                type=int,
                help="customers seeded into the application database on the first up (default 1000)",
            )
            p.add_argument(
                "--monitoring",
                action=argparse.BooleanOptionalAction,
                default=None,
                help="run Prometheus, Alertmanager and the exporters (default: as last time, initially on)",
            )
        if name == "down":
            p.add_argument("--purge", action="store_true", help="also remove the lab directory")
    fault = lab_sub.add_parser("fault", help="inject a DR drill fault by hand")
    fault.add_argument("name", choices=tuple(dict.fromkeys((*FAULT_NAMES, *REGION_FAULT_NAMES))), help="the fault")
    fault.add_argument("--region", help="the region (region-outage, region-partition, wan-degraded)")
    fault.add_argument("--node", help="the node (default: the primary; for replica-loss the lowest-priority replica)")
    heal = lab_sub.add_parser("heal", help="undo what faults left: resume, restart apps, start nodes that are safe to")
    for p in (fault, heal):
        p.add_argument("--lab-dir", help="lab state directory (default $REGIONOPS_LAB_DIR or ./.lab)")

    run = sub.add_parser("run", help="start a runbook's deployment and follow it (--here: in this process)")
    run.add_argument("name", help="runbook name, e.g. region-health")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="a runbook parameter (repeatable)")
    run.add_argument("--topology", help="topology file (default $REGIONOPS_TOPOLOGY or the lab's)")
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    run.add_argument(
        "--here",
        action="store_true",
        help="run it in this process (for debugging; it says where that is) instead of where its deployment runs",
    )
    run.add_argument(
        "--deployment",
        default="lab",
        help="the deployment to start: <runbook>/DEPLOYMENT (default lab: the lab's served runbooks)",
    )

    fence = sub.add_parser("fence", help="the shared fences: list them, or clear one deliberately")
    fence_sub = fence.add_subparsers(dest="fence_command", required=True)
    fence_list = fence_sub.add_parser("list", help="every fenced node, who fenced it, when and why")
    fence_clear = fence_sub.add_parser("clear", help="unfence a node by hand (recorded and posted to Slack)")
    fence_clear.add_argument("--node", required=True, help="the fenced node")
    fence_clear.add_argument("--reason", required=True, help="why it is safe now (kept with the record)")
    fence_clear.add_argument("--confirm", required=True, metavar="NODE", help="the node's name again")
    for p in (fence_list, fence_clear):
        p.add_argument("--topology", help="topology file (default $REGIONOPS_TOPOLOGY or the lab's)")
        p.add_argument("--cluster", help="cluster (default the topology's only cluster)")

    sub.add_parser("runbooks", help="list the runbooks")
    executor = sub.add_parser("executor", help="serve this host's region's node steps (run on the database hosts)")
    executor.add_argument("--region", required=True, help="the region of this host's nodes")
    executor.add_argument("--limit", type=int, default=4, help="node steps run at once")
    demo = sub.add_parser("demo", help="start the lab, run region health, print where to look")
    demo.add_argument("--lab-dir", help="lab state directory (default $REGIONOPS_LAB_DIR or ./.lab)")
    demo.add_argument(
        "--wan",
        help="a new lab's WAN: realistic (the default where root and ip/nft allow), scaled:F or off; "
        "a lab that exists keeps its own",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``regionops`` command."""
    args = make_parser().parse_args(argv)
    try:
        if args.command == "lab":
            return cmd_lab(args)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "demo":
            return cmd_demo(args)
        if args.command == "fence":
            return cmd_fence(args)
        if args.command == "executor":
            import importlib

            from flows.registry import RUNBOOKS
            from regionops.node.executor import main as serve

            # Imported now rather than by the first step: a step's run context names its runbook's module.
            for rb in RUNBOOKS.values():
                importlib.import_module(rb.module)
            serve(["--region", args.region, "--limit", str(args.limit)])
            return EXIT_OK
        from flows.registry import RUNBOOKS

        for rb in RUNBOOKS.values():
            print(f"{rb.name:<16} {rb.summary}")
        return EXIT_OK
    except RunbookError as exc:
        print(f"regionops: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
