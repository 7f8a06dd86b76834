"""The lab's PostgreSQL component: cluster core's three nodes, their WAL archiving and the stanza.

The nodes themselves are made and started by :mod:`regionops.lab.pglab`; this component
adds what the lab decides around them: fenced nodes stay stopped, every node archives
its WAL through pgBackRest from its first start, and ``status`` reports each node with
region health's verdict on it.
"""

from __future__ import annotations

from regionops.drivers import pgbackrest
from regionops.drivers.postgres import NodeState, observer_for
from regionops.ha.fencing import FenceStore, home_bucket
from regionops.lab import pglab
from regionops.lab.component import ComponentStatus, LabComponent, Observation, Progress, indented
from regionops.lab.config import LAB_CLUSTER, LAB_NODES
from regionops.lab.processes import port_open
from regionops.topology import load_topology


class LabCluster(LabComponent):
    """Cluster core: created with primary eu-1 and replicas us-1 and apac-1, then started as it is."""

    def start(self, progress: Progress) -> None:
        """Create (first time) and start the nodes; fenced nodes stay stopped."""
        pglab.ensure_cluster(
            self.cfg,
            indented(progress),
            keep_stopped=self.fenced_nodes(),
            archive=self._archive_settings,
        )

    def stop(self, progress: Progress) -> None:
        """Stop every running node (and this lab's pgBackRest)."""
        if self.cfg.pg_dir.exists():
            pglab.stop_cluster(self.cfg, progress)

    def _archive_settings(self, node: str) -> dict[str, str]:
        topo = load_topology(self.cfg.topology_path)
        plan = pgbackrest.plan_stanza(topo, LAB_CLUSTER)
        pgbackrest.write_config(topo, plan, node)  # archive_command names it: present before the node starts
        return pgbackrest.archive_settings(plan, node, pgbackrest.binary())

    def ensure_stanza(self, progress: Progress) -> None:
        """Write every node's pgBackRest configuration and create the stanza from the primary."""
        progress = indented(progress)
        topo = load_topology(self.cfg.topology_path)
        plan = pgbackrest.plan_stanza(topo, LAB_CLUSTER)
        for node in LAB_NODES:
            pgbackrest.write_config(topo, plan, node)
        writable = pglab.writable_nodes(self.cfg)
        if len(writable) != 1:
            progress(f"not exactly one primary ({', '.join(writable) or 'none'}): stanza left as it is")
            return
        driver = pgbackrest.PgBackRest(plan, writable[0], pgbackrest.LocalRunner(self.cfg.os_user))
        progress(driver.stanza_create().sentence())
        progress(plan.sentence())

    def fenced_nodes(self) -> set[str]:
        """Nodes of cluster core fenced in the shared fence store (``up`` leaves them stopped)."""
        topo = load_topology(self.cfg.topology_path)
        fences = FenceStore.for_topology(topo)
        if not fences.store.bucket_status(home_bucket(topo, LAB_CLUSTER)).reachable:
            return set()  # the first `up`: no home bucket yet, so nothing was ever fenced
        return set(fences.fenced(LAB_CLUSTER))

    def observe_nodes(self) -> dict[str, NodeState]:
        """Every node's state now (a stopped node is an unreachable state, not an error)."""
        observer = observer_for(connect_timeout=2)
        return {node: observer.observe(node, pglab.conninfo(self.cfg, node)) for node in LAB_NODES}

    def stopped_nodes(self, fenced: set[str]) -> list[str]:
        """Nodes that are neither fenced nor running (``lab up`` starts them)."""
        return [n for n in LAB_NODES if n not in fenced and not port_open(self.cfg.ports.postgres[n])]

    def status(self, seen: Observation) -> list[ComponentStatus]:
        """One line per node: its role and replication as observed, and region health's problems with it."""
        report = seen.report
        split = report is not None and bool(
            report.problem_kinds() & {"no_primary", "multiple_primaries", "split_brain"}
        )
        comps = []
        for node, state in seen.states.items():
            port = self.cfg.ports.postgres[node]
            problems = seen.problems_about(node)
            if split and state.role == "primary":
                problems = [*problems, f"{node} is one of several primaries"]
            running = port_open(port, self.cfg.node_host(node))
            detail = state.sentence() if state.reachable or running else "not running"
            if node in seen.fenced:
                detail += "; fenced (left stopped until replica-resync)"
            comps.append(
                ComponentStatus(
                    name=f"postgres {node}",
                    endpoint=f"{self.cfg.node_host(node)}:{port}",
                    running=running,
                    healthy=report is not None and state.reachable and not problems,
                    detail="; ".join([detail, *(p for p in problems if not p.startswith(f"node {node} ("))]),
                )
            )
        return comps
