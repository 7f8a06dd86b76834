"""The lab's WAN component: the regions' namespaces, the nft rules, the WAN relay and each region's S3 endpoint.

Only labs made with ``--wan`` other than ``off`` have one (see :mod:`regionops.lab.wan`
for the design).  ``start`` builds what is missing and starts the relay, the host's
backbone forwarder (moto, which listens on loopback, seen from the regions) and one S3
endpoint per region inside its namespace; ``stop`` stops them and removes every
namespace, link, address and rule; ``status`` measures the round trip between every
pair of regions and each replica's lag.
"""

from __future__ import annotations

import json
import subprocess
import sys

from regionops.drivers.postgres import sql_node_at
from regionops.errors import ConfigurationError, RunbookError
from regionops.lab import pglab
from regionops.lab.component import ComponentStatus, LabComponent, Observation, Progress, indented
from regionops.lab.config import LAB_NODES, LabConfig
from regionops.lab.processes import port_open, running_pid
from regionops.lab.wan import (
    OPS_SITE,
    WanPlan,
    WanState,
    apply_rules,
    build,
    existing_namespaces,
    leftovers,
    require_tools,
    teardown,
)

RELAY = "wan-relay"
BACKBONE = "aws-backbone"
# The control plane's services listen on the host's loopback; the ops site's gateway serves
# them at the ops address (through the host's control backbone), so every lab process names
# them there and a region's calls to them cross the WAN to the ops site.
CONTROL_BACKBONE = "control-backbone"
OPS_GATEWAY = "ops-gateway"


def s3_endpoint_process(region: str) -> str:
    """The process name of a region's S3 endpoint."""
    return f"s3-{region}"


class LabWan(LabComponent):
    """The WAN between the regions (absent from a loopback lab)."""

    @property
    def plan(self) -> WanPlan | None:
        return self.cfg.wan_plan()

    def process_names(self) -> list[str]:
        """The relay, the backbone forwarder and one S3 endpoint per region."""
        plan = self.plan
        if not plan:
            return []
        return [RELAY, BACKBONE, CONTROL_BACKBONE, OPS_GATEWAY, *(s3_endpoint_process(r) for r in plan.regions)]

    def state(self) -> WanState:
        """The WAN's conditions now (what the relay follows)."""
        return WanState.load(self.cfg.wan_state_path)

    def save_state(self, state: WanState) -> None:
        """Change the WAN's conditions: the relay follows the file, the nft rules are replaced now."""
        plan = self.plan
        if plan is None:
            raise ConfigurationError("this lab has no WAN (made with --wan off): region faults need `lab up --wan ...`")
        self.cfg.wan_state_path.parent.mkdir(parents=True, exist_ok=True)
        state.save(self.cfg.wan_state_path)
        apply_rules(plan, self._relay_port(), state.partitioned, self.cfg.ports.moto)

    def _relay_port(self) -> int:
        port = self.cfg.ports.wan_relay
        if port is None:
            raise ConfigurationError(f"lab {self.cfg.lab_dir} has no port for the WAN relay: make it again")
        return port

    def start(self, progress: Progress) -> None:
        """Namespaces, links, rules, relay, backbone and regional S3 endpoints: whatever is missing."""
        plan = self.plan
        if plan is None:
            return
        say = indented(progress)
        require_tools()
        for line in build(plan):
            say(f"made {line}")
        state = self.state()
        state.profile = self.cfg.wan
        self.save_state(state)
        say(f"WAN {self.cfg.wan}: regions {', '.join(f'{r} {plan.address(r)}' for r in plan.regions)}")
        py = sys.executable
        port = self._relay_port()
        self.start_process(
            RELAY,
            [py, "-m", "regionops.lab.relay", "--lab-index", str(plan.index), "--port", str(port)]
            + ["--state", str(self.cfg.wan_state_path)],
            port,
        )
        moto = self.cfg.ports.moto
        backbone = f"{plan.backbone}:{moto}"
        self._start_forwarder(BACKBONE, [(backbone, f"127.0.0.1:{moto}")], None)
        control = self.cfg.control_ports()
        self._start_forwarder(CONTROL_BACKBONE, [(f"{plan.backbone}:{p}", f"127.0.0.1:{p}") for p in control], None)
        self.start_ops_gateway()
        for region in plan.regions:
            self._start_forwarder(s3_endpoint_process(region), [(f"{plan.address(region)}:{moto}", backbone)], region)

    def start_ops_gateway(self) -> None:
        """The control plane's services at the ops site's address (again, after an ops outage)."""
        plan = self.plan
        if plan:
            ops = plan.address(OPS_SITE)
            pairs = [(f"{ops}:{p}", f"{plan.backbone}:{p}") for p in self.cfg.control_ports()]
            self._start_forwarder(OPS_GATEWAY, pairs, OPS_SITE)

    def start_s3_endpoint(self, region: str) -> None:
        """Start one region's S3 endpoint again (after a region outage)."""
        plan = self.plan
        if plan:
            moto = self.cfg.ports.moto
            self._start_forwarder(
                s3_endpoint_process(region), [(f"{plan.address(region)}:{moto}", f"{plan.backbone}:{moto}")], region
            )

    def _start_forwarder(self, name: str, pairs: list[tuple[str, str]], site: str | None) -> None:
        """A plain forwarder of each (listen, target) pair: in ``site``'s namespace, or on the host when None."""
        argv = [sys.executable, "-m", "regionops.lab.relay"]
        for listen, target in pairs:
            argv += ["--forward", listen, "--to", target]
        host, _, port = pairs[0][0].rpartition(":")
        self.start_process(name, argv, int(port), timeout=15, region=site, host=host)

    def stop(self, progress: Progress) -> None:
        """Stop the WAN's processes and remove every namespace, link, address and rule of this lab."""
        super().stop(progress)
        plan = self.plan
        if plan is not None:
            for line in teardown(plan):
                progress(f"removed {line}")

    def leftovers(self) -> list[str]:
        """What of the WAN is still on the host (after ``down``: nothing)."""
        return leftovers(self.plan) if self.plan else []

    def status(self, seen: Observation) -> list[ComponentStatus]:
        """The relay, and per region its namespace, its measured round trips and its S3 endpoint."""
        plan = self.plan
        if plan is None:
            return []
        state = self.state()
        relay_ok = running_pid(self.cfg.lab_dir, RELAY) is not None
        lines = [
            ComponentStatus(
                name="wan relay",
                endpoint=f"port {self.cfg.ports.wan_relay}",
                running=relay_ok,
                healthy=relay_ok,
                detail=f"WAN {self.cfg.wan}"
                + (f"; partitioned: {', '.join(state.partitioned)}" if state.partitioned else "")
                + (f"; degraded: {', '.join(state.degraded)}" if state.degraded else ""),
            )
        ]
        rtts = measure_rtts(self.cfg) if relay_ok else {}
        lags = replica_lags(self.cfg, seen)
        for region in plan.regions:
            name = s3_endpoint_process(region)
            s3_up = port_open(self.cfg.ports.moto, plan.address(region))
            trips = ", ".join(
                f"{other} {rtts[(region, other)]:.0f} ms" if rtts.get((region, other)) is not None else f"{other} -"
                for other in plan.regions
                if other != region
            )
            lines.append(
                ComponentStatus(
                    name=f"region {region}",
                    endpoint=f"{plan.address(region)} (netns {plan.netns(region)})",
                    running=plan.netns(region) in existing_namespaces(),
                    healthy=s3_up,
                    detail=f"round trip to {trips}; S3 endpoint {'up' if s3_up else 'DOWN'} ({name})"
                    + "".join(f"; {lags[n]}" for n, r in LAB_NODES.items() if r == region and n in lags),
                )
            )
        ops_up = port_open(self.cfg.ports.prefect, plan.address(OPS_SITE))
        trips = ", ".join(
            f"{r} {rtts[(OPS_SITE, r)]:.0f} ms" if rtts.get((OPS_SITE, r)) is not None else f"{r} -"
            for r in plan.regions
        )
        lines.append(
            ComponentStatus(
                name="ops site",
                endpoint=f"{plan.address(OPS_SITE)} (netns {plan.netns(OPS_SITE)})",
                running=plan.netns(OPS_SITE) in existing_namespaces(),
                healthy=ops_up,
                detail=f"the control plane (Prefect API, Slack, monitoring) at this address; round trip to {trips}"
                + ("" if ops_up else "; its gateway does NOT answer (ops outage?)"),
            )
        )
        return lines


def replica_lags(cfg: LabConfig, seen: Observation) -> dict[str, str]:
    """Each streaming replica's lag behind the primary, in bytes and ms, as the primary reports it."""
    primary = next((n for n, st in seen.states.items() if st.reachable and st.role == "primary"), None)
    if primary is None:
        return {}
    sql = (
        "SELECT application_name AS name, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS lag_b,"
        " coalesce(extract(epoch FROM replay_lag) * 1000, 0)::float AS lag_ms FROM pg_stat_replication"
    )
    try:
        rows = sql_node_at(pglab.conninfo(cfg, primary, "postgres")).query(sql)
    except RunbookError:
        return {}
    return {r["name"]: f"replica lag {int(r['lag_b'] or 0)} B, {r['lag_ms']:.0f} ms" for r in rows}


def measure_rtts(cfg: LabConfig, samples: int = 5) -> dict[tuple[str, str], float | None]:
    """The round trip from each site (region or ops) to each other region's node, measured from inside the site.

    The minimum of ``samples`` ``SELECT 1`` round trips on one connection, from a client in
    the source region's namespace to the destination region's node: what a query really
    costs across that WAN path (None when the node does not answer).
    """
    plan = cfg.wan_plan()
    if plan is None:
        return {}
    targets = {region: (cfg.node_host(node), cfg.ports.postgres[node]) for node, region in LAB_NODES.items()}
    result: dict[tuple[str, str], float | None] = {}
    for region in plan.sites:
        job = {r: targets[r] for r in plan.regions if r != region}
        argv = ["ip", "netns", "exec", plan.netns(region), sys.executable, "-m", "regionops.lab.wan_probe"]
        try:
            proc = subprocess.run(
                argv,
                input=json.dumps({"targets": job, "password": cfg.pg_password(), "samples": samples}),
                capture_output=True,
                text=True,
                timeout=30,
            )
            measured = json.loads(proc.stdout or "{}")
        except (subprocess.TimeoutExpired, json.JSONDecodeError):
            measured = {}
        for other in job:
            result[(region, other)] = measured.get(other)
    return result
