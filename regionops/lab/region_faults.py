"""Faults that act on a whole region of a lab with a WAN: outage, partition, degraded links; and heal.

- ``region-outage``: everything in the region stops at once, as on a power loss: its
  node(s) are killed (SIGKILL, no shutdown checkpoint), its app, its S3 endpoint, its
  executor, worker and exporters stop, and its links are cut, so nothing answers there.
- ``region-partition``: the region's links to every other region are cut (nft drops the
  packets both ways, so connections stall rather than reset); everything inside keeps
  running, and its app keeps serving and writing to whatever its database is.
- ``wan-degraded``: extra delay and loss on the region's links.
- ``ops-outage``: the control plane's site is gone: its links are cut, and the Prefect
  server, its database, the runbooks it serves and the ops site's gateway stop (no
  ``--region``: the ops site is not a region).

``heal`` undoes each: the links come back, then what an outage stopped is started again
through the node-level heal (which never starts a second writable primary).  The host
(the operator's VPN) reaches every region throughout.
"""

from __future__ import annotations

from regionops.drivers.pgtools import kill_instance
from regionops.errors import ConfigurationError
from regionops.lab.config import LAB_CLUSTER, LAB_NODES, LAB_REGIONS
from regionops.lab.network import OPS_GATEWAY, s3_endpoint_process
from regionops.lab.prefect_server import prefect_healthy
from regionops.lab.processes import running_pid, stop
from regionops.lab.quorum import member_name
from regionops.lab.wan import OPS_SITE
from regionops.node.local import LocalNodeOperator

REGION_FAULTS = ("region-outage", "region-partition", "wan-degraded")
SITE_FAULTS = ("ops-outage",)  # faults of the ops site, not of a region
OPS_PROCESSES = (OPS_GATEWAY, "prefect-serve", "prefect-server")  # stopped in this order by an ops outage


def region_processes(region: str) -> list[str]:
    """Every lab process that lives in ``region`` (besides its PostgreSQL nodes)."""
    nodes = [n for n, r in LAB_NODES.items() if r == region]
    return [
        f"app-{region}",
        member_name(region),  # its etcd member: the quorum goes on with the other two regions
        s3_endpoint_process(region),
        f"executor-{region}",
        f"worker-{region}",
        *(f"postgres-exporter-{n}" for n in nodes),
    ]


def inject_region_fault(lab, name: str, region: str, extra_ms: float = 200.0, loss: float = 0.05) -> list[str]:  # noqa: ANN001 - a Lab (import cycle)
    """Inject ``name`` on ``region``; returns what was done, a sentence per step."""
    plan = lab.cfg.wan_plan()
    if plan is None:
        raise ConfigurationError(
            f"{name} needs a lab whose regions are namespaces: `regionops lab down --purge`, "
            "then `regionops lab up --wan realistic` (or scaled:F)"
        )
    if region not in plan.regions:
        raise ConfigurationError(f"--region {region!r}: the lab's regions are {', '.join(plan.regions)}")
    if name not in REGION_FAULTS:
        raise ConfigurationError(f"unknown region fault {name!r}: {', '.join(REGION_FAULTS)}")
    state = lab.wan.state()
    done: list[str] = []
    if name == "wan-degraded":
        state.degraded[region] = {"extra_ms": extra_ms, "loss": loss}
        lab.wan.save_state(state)
        return [f"{region}'s links now add {extra_ms:g} ms and lose {loss:.0%} of their segments (retransmitted)"]
    if region not in state.partitioned:
        state.partitioned.append(region)
    if name == "region-outage" and region not in state.down:
        state.down.append(region)
    lab.wan.save_state(state)  # cut first: nothing in the region answers anyone any more
    done.append(f"cut every link between {region} and the other regions")
    if name == "region-outage":
        operator = LocalNodeOperator(lab.topology(), LAB_CLUSTER)  # the region's own "host": its namespace
        for node in (n for n, r in LAB_NODES.items() if r == region):
            ctl = operator.pgctl(node)
            killed = kill_instance(ctl) if ctl.postmaster_pid() else 0
            done.append(f"killed {node} ({killed} process(es), SIGKILL)" if killed else f"{node} was not running")
        for process in region_processes(region):
            if stop(lab.cfg.lab_dir, process):
                done.append(f"stopped {process}")
    else:
        done.append(f"everything in {region} keeps running; its app keeps writing to whatever its database is")
    return done


def inject_ops_outage(lab) -> list[str]:  # noqa: ANN001 - a Lab (import cycle)
    """The control plane's site is lost: its links are cut, its services stop (Prefect's database last)."""
    if lab.cfg.wan_plan() is None:
        raise ConfigurationError(
            "ops-outage needs a lab with an ops site: `regionops lab down --purge`, "
            "then `regionops lab up --wan realistic`"
        )
    state = lab.wan.state()
    for field in (state.partitioned, state.down):
        if OPS_SITE not in field:
            field.append(OPS_SITE)
    lab.wan.save_state(state)
    done = ["cut every link between the ops site and the regions"]
    for process in OPS_PROCESSES:
        if stop(lab.cfg.lab_dir, process):
            done.append(f"stopped {process}")
    lab.prefect_db.stop(lambda _: None)
    done.append("stopped the Prefect server's database")
    return done


def heal_regions(lab) -> list[str]:  # noqa: ANN001 - a Lab (import cycle)
    """Restore every link, then start what an outage stopped (nodes only where that is safe)."""
    if lab.cfg.wan_plan() is None:
        return []
    state = lab.wan.state()
    if not (state.partitioned or state.degraded or state.down):
        return ["every region's links are up"]
    notes = []
    if state.partitioned:
        notes.append(f"restored the links of {', '.join(state.partitioned)}")
    if state.degraded:
        notes.append(f"removed the extra delay and loss on {', '.join(state.degraded)}")
    was_down = list(state.down)
    state.partitioned, state.degraded, state.down = [], {}, []
    lab.wan.save_state(state)
    if OPS_SITE in was_down:
        was_down.remove(OPS_SITE)
        lab.wan.start_ops_gateway()
        lab.prefect_db.start(lambda _: None)
        lab.prefect.start(lambda _: None)
        lab.serve.start(lambda _: None)
        lab.executors.start(lambda _: None)  # any that gave up while the API was gone
        notes.append("started the ops site again: its gateway, the Prefect server, its database, the served runbooks")
    for region in was_down:
        lab.wan.start_s3_endpoint(region)
        notes.append(f"started {s3_endpoint_process(region)} again")
        if lab.cfg.ports.etcd:
            lab.quorum.start(lambda _: None, regions=[region])
            notes.append(f"started {member_name(region)} again (it rejoined the quorum)")
        nodes = [n for n, r in LAB_NODES.items() if r == region]
        if lab.cfg.monitoring and lab.cfg.ports.exporters:
            lab.monitoring.start_exporters(nodes)
            notes.append(f"started {', '.join(f'postgres-exporter-{n}' for n in nodes)} again")
        if prefect_healthy(lab.cfg):
            lab.executors.start(lambda _: None, regions=[region])
            notes.append(f"started executor-{region} again")
            if any(running_pid(lab.cfg.lab_dir, f"worker-{r}") for r in LAB_REGIONS if r != region):
                lab.workers.start(lambda _: None, regions=[region], deploy=False)
                notes.append(f"started worker-{region} again")
    return notes
