"""LocalNodeOperator: node steps performed on this machine (the lab, or the node's own worker).

Before every step it checks where it stands (:mod:`regionops.node.standing`): the data
directory it would touch must belong to the node (system identifier, port) and, when it
runs as a region's worker, the worker's region must be the node's.  Otherwise it
refuses with :class:`PreconditionFailed`, having changed nothing.
"""

from __future__ import annotations

import logging
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from regionops.backup import restore_on_host
from regionops.drivers import pgbackrest
from regionops.drivers.pgconf import (
    ARCHIVE_CONF,
    configure_standby,
    configured_port,
    slot_name,
    write_archive_settings,
    write_node_settings,
)
from regionops.drivers.pgdata import pg_basebackup, pg_rewind, read_control_data, read_wal_end
from regionops.drivers.pgtools import PgCtl, chown_to, kill_instance, server_log
from regionops.drivers.postgres import conninfo_for, observer_for, replication_conninfo
from regionops.errors import ExternalSystemError, PreconditionFailed, RunbookError, TransientError
from regionops.ha.identity import IdentityStore
from regionops.lsn import Lsn
from regionops.model import ControlData, WalEnd
from regionops.model.restore import (
    ActivatedRestore,
    ActivateRequest,
    RestoreDiskFacts,
    RestorePlan,
    StagedRestore,
    StageRequest,
)
from regionops.node import operations
from regionops.node.operator import RECLONE_MARK, REPLACED_MARK, NodeOpResult, StopMode
from regionops.node.pgbackrest_step import PgBackRestCommand, PgBackRestRun, run_on_this_machine
from regionops.node.standing import Standing, StandingFacts, judge_standing
from regionops.topology import Topology

log = logging.getLogger(__name__)


class LocalNodeOperator:
    """Performs node operations on this machine: the lab, or a node's own worker."""

    def __init__(
        self,
        topology: Topology,
        cluster: str,
        start_timeout: int = 120,
        *,
        worker_region: str | None = None,
        check_region: bool = False,
    ):
        """``check_region``: refuse unless ``worker_region`` is the node's (a regional worker's run)."""
        self.topology = topology
        self.cluster_name, self.cluster = topology.cluster(cluster)
        self.start_timeout = start_timeout
        self.worker_region = worker_region
        self.check_region = check_region
        self._stood: dict[str, Standing] = {}

    # -- where do I stand ---------------------------------------------------------------
    def standing(self, node: str) -> Standing:
        """Gather the facts about this worker and the node's data directory, and judge them."""
        spec = self.topology.node(self.cluster_name, node)
        data = self.data_dir(node)
        exists = (data / "PG_VERSION").exists()
        dir_sysid = dir_port = cluster_sysid = reported_by = None
        if exists:
            dir_port = configured_port(data)
            try:
                dir_sysid = read_control_data(data, self.cluster.os_user).get("Database system identifier")
            except RunbookError as exc:
                log.warning("pg_controldata of %s failed: %s", data, exc)
            cluster_sysid, reported_by = self._cluster_system_identifier(node)
        return judge_standing(
            StandingFacts(
                node=node,
                node_region=spec.region,
                node_port=spec.port,
                worker_region=self.worker_region,
                check_region=self.check_region,
                data_dir=str(data),
                data_dir_exists=exists,
                dir_system_identifier=dir_sysid,
                dir_port=dir_port,
                cluster_system_identifier=cluster_sysid,
                reported_by=reported_by,
            )
        )

    def _cluster_system_identifier(self, node: str) -> tuple[str | None, str | None]:
        """The system identifier a reachable member reports over SQL (the other members first), else the record
        made when the cluster was last seen healthy."""
        for member in [*(n for n in self.cluster.nodes if n != node), node]:
            state = observer_for(connect_timeout=2).observe(
                member, conninfo_for(self.cluster, self.cluster.nodes[member])
            )
            if state.reachable and state.system_identifier:
                return state.system_identifier, member
        try:
            recorded = IdentityStore.for_topology(self.topology).get(self.cluster_name)
        except RunbookError as exc:
            log.warning("the recorded identity of %s cannot be read: %s", self.cluster_name, exc)
            recorded = None
        if recorded is None:
            return None, None
        return recorded.system_identifier, f"the record of {recorded.sentence()}"

    def require_standing(self, node: str) -> Standing:
        """Refuse (PreconditionFailed, nothing changed) unless this step stands where it should."""
        if node not in self._stood:
            verdict = self.standing(node)
            if not verdict.ok:
                raise PreconditionFailed(verdict.sentence())
            self._stood[node] = verdict
        return self._stood[node]

    # -- helpers ------------------------------------------------------------------------
    def data_dir(self, node: str) -> Path:
        return Path(self.topology.node(self.cluster_name, node).data_dir)

    def pgctl(self, node: str) -> PgCtl:
        """pg_ctl for the node's data directory (also for fault injection and rescue on this machine)."""
        return self._pgctl(node)

    def _pgctl(self, node: str, data_dir: Path | None = None) -> PgCtl:
        data = data_dir or self.data_dir(node)
        spec = self.cluster.nodes.get(node)
        return PgCtl(data, self.cluster.os_user, server_log(data, node), netns=spec.netns if spec else None)

    def _source_conninfo(self, source: str, for_node: str) -> str:
        return replication_conninfo(self.cluster, source, for_node)

    def _write_own_settings(self, node: str, data_dir: Path) -> None:
        # pg_rewind and pg_basebackup copy the source's configuration files, including its
        # port and cluster_name: the node's own settings must be written back.
        spec = self.cluster.nodes[node]
        write_node_settings(data_dir, node=node, host=spec.host, port=spec.port, os_user=self.cluster.os_user)
        if (data_dir / ARCHIVE_CONF).exists():
            # The copied archive settings name the SOURCE's pgBackRest config (its data
            # directory, its spool): once promoted, this node would archive through them.
            plan = pgbackrest.plan_stanza(self.topology, self.cluster_name)
            write_archive_settings(
                data_dir, pgbackrest.archive_settings(plan, node, pgbackrest.binary()), self.cluster.os_user
            )

    def _follow(self, node: str, data_dir: Path, primary: str) -> None:
        configure_standby(
            data_dir,
            primary_conninfo=self._source_conninfo(primary, node),
            slot=slot_name(node),
            os_user=self.cluster.os_user,
        )

    def _settle_copy(self, node: str, data_dir: Path, source: str) -> None:
        """A directory copied from ``source`` (rewind, re-clone) gets the node's own settings and follows it."""
        self._write_own_settings(node, data_dir)
        self._follow(node, data_dir, source)

    @staticmethod
    def _timed(started: float) -> float:
        return round(time.monotonic() - started, 2)

    # -- the table's dispatch -------------------------------------------------------------
    def perform(self, operation: str, node: str, *args: Any) -> Any:
        """Run the step named ``operation`` (an OPERATIONS entry) on this machine."""
        return getattr(self, operations.operation(operation).method)(node, *args)

    # -- reads --------------------------------------------------------------------------
    def data_dir_exists(self, node: str) -> bool:
        self.require_standing(node)
        return (self.data_dir(node) / "PG_VERSION").exists()

    def is_running(self, node: str) -> bool:
        self.require_standing(node)
        return self.data_dir_exists(node) and self._pgctl(node).is_running()

    def control_data(self, node: str) -> ControlData | None:
        self.require_standing(node)
        data = self.data_dir(node)
        if not (data / "PG_VERSION").exists():
            return None
        fields = read_control_data(data, self.cluster.os_user)
        try:
            min_recovery = Lsn.parse(fields["Minimum recovery ending location"])
            return ControlData(
                node=node,
                cluster_state=fields["Database cluster state"],
                system_identifier=fields["Database system identifier"],
                timeline=int(fields["Latest checkpoint's TimeLineID"]),
                checkpoint_lsn=Lsn.parse(fields["Latest checkpoint location"]),
                min_recovery_lsn=min_recovery if min_recovery.value else None,
                wal_log_hints=fields.get("wal_log_hints setting") == "on",
                data_checksums=fields.get("Data page checksum version", "0") != "0",
                standby_signal=(data / "standby.signal").exists(),
            )
        except (KeyError, ValueError) as exc:
            raise ExternalSystemError(f"pg_controldata output for {node} is not understood: {exc}") from exc

    def wal_end(self, node: str) -> WalEnd | None:
        self.require_standing(node)
        data = self.data_dir(node)
        if not (data / "pg_wal").is_dir():
            return None
        found = read_wal_end(data, self.cluster.os_user)
        if found is None:
            return None
        lsn, last_commit, segment = found
        return WalEnd(node=node, lsn=lsn, last_commit_at=last_commit, segment=segment)

    def is_frozen(self, node: str) -> bool:
        self.require_standing(node)
        return self._pgctl(node).is_frozen()

    def primary_start_blocked(self, node: str) -> bool:
        self.require_standing(node)
        return (self.data_dir(node) / "standby.signal").exists()

    # -- changes ------------------------------------------------------------------------
    def start(self, node: str) -> NodeOpResult:
        self.require_standing(node)
        started = time.monotonic()
        ctl = self._pgctl(node)
        if ctl.is_running():
            return NodeOpResult(node=node, operation="start", changed=False, detail=f"{node} was already running")
        ctl.start(timeout=self.start_timeout)
        return NodeOpResult(
            node=node,
            operation="start",
            changed=True,
            seconds=self._timed(started),
            detail=f"started {node} in {self._timed(started):.1f} s",
        )

    def stop(self, node: str, mode: StopMode = "fast") -> NodeOpResult:
        self.require_standing(node)
        started = time.monotonic()
        if not self.data_dir_exists(node):
            return NodeOpResult(
                node=node,
                operation="stop",
                changed=False,
                detail=f"{node} has no data directory, so nothing runs there",
            )
        ctl = self._pgctl(node)
        if not ctl.is_running():
            return NodeOpResult(node=node, operation="stop", changed=False, detail=f"{node} was not running")
        if mode == "immediate" and ctl.is_frozen():
            # A stopped (hung) postmaster never acts on pg_ctl's SIGQUIT: kill the instance.
            killed = kill_instance(ctl)
            return NodeOpResult(
                node=node,
                operation="stop",
                changed=True,
                seconds=self._timed(started),
                detail=f"killed {node} (SIGKILL to {killed} frozen process(es)): a hung server "
                f"cannot honour an immediate stop",
            )
        ctl.stop(mode, timeout=60)
        return NodeOpResult(
            node=node,
            operation="stop",
            changed=True,
            seconds=self._timed(started),
            detail=f"stopped {node} ({mode}) in {self._timed(started):.1f} s",
        )

    def configure_standby(self, node: str, primary: str) -> NodeOpResult:
        self.require_standing(node)
        data = self.data_dir(node)
        if self._pgctl(node).is_running():
            raise PreconditionFailed(f"cannot configure {node} as a standby on disk while it runs; stop it first")
        self._follow(node, data, primary)
        return NodeOpResult(
            node=node,
            operation="configure-standby",
            changed=True,
            detail=f"configured {node} as a standby of {primary} (slot {slot_name(node)})",
        )

    def block_primary_start(self, node: str) -> NodeOpResult:
        self.require_standing(node)
        data = self.data_dir(node)
        if not (data / "PG_VERSION").exists():
            return NodeOpResult(
                node=node,
                operation="block-primary-start",
                changed=False,
                detail=f"{node} has no data directory to fence",
            )
        signal = data / "standby.signal"
        if signal.exists():
            return NodeOpResult(
                node=node,
                operation="block-primary-start",
                changed=False,
                detail=f"{node} already has standby.signal: it can only start read-only",
            )
        signal.touch()
        chown_to(signal, self.cluster.os_user)
        return NodeOpResult(
            node=node,
            operation="block-primary-start",
            changed=True,
            detail=f"wrote standby.signal into {node}'s data directory: if anything starts it, "
            f"it starts read-only, never as a second primary",
        )

    def fence_on_host(self, node: str) -> NodeOpResult:
        self.require_standing(node)
        started = time.monotonic()
        if not (self.data_dir(node) / "PG_VERSION").exists():
            raise PreconditionFailed(f"{node} has no data directory here, so it could not be stopped or fenced on disk")
        # standby.signal first: it is read only when the server starts, so it is harmless beside
        # a running one, and if the stop below fails, whatever starts the node next starts read-only.
        blocked = self.block_primary_start(node)
        try:
            stopped = self.stop(node, "immediate")
        except RunbookError as exc:
            raise ExternalSystemError(f"{blocked.detail}; but stopping {node} failed: {exc}") from exc
        return NodeOpResult(
            node=node,
            operation="fence-on-host",
            changed=stopped.changed or blocked.changed,
            seconds=self._timed(started),
            detail=f"{stopped.detail}; {blocked.detail}",
        )

    def allow_primary_start(self, node: str) -> NodeOpResult:
        self.require_standing(node)
        signal = self.data_dir(node) / "standby.signal"
        changed = signal.exists()
        signal.unlink(missing_ok=True)
        detail = "removed standby.signal" if changed else "found no standby.signal"
        return NodeOpResult(
            node=node, operation="allow-primary-start", changed=changed, detail=f"{detail}: {node} may start as primary"
        )

    def rewind(self, node: str, source: str) -> NodeOpResult:
        self.require_standing(node)
        started = time.monotonic()
        data = self.data_dir(node)
        if self._pgctl(node).is_running():
            raise PreconditionFailed(f"cannot rewind {node} while it runs; stop it first")
        # pg_rewind first finishes crash recovery of a crashed target in single-user mode,
        # which refuses to run with a standby.signal present (e.g. from our fence).
        for name in ("standby.signal", "recovery.signal"):
            (data / name).unlink(missing_ok=True)
        # The password travels in pg_rewind's environment, never on its command line.
        out = pg_rewind(
            data,
            replication_conninfo(self.cluster, source, node, with_password=False),
            self.cluster.os_user,
            password=conninfo_for(self.cluster, self.cluster.nodes[source]).password,
        )
        if "are on the same timeline" in out:
            # The source's pg_control still shows its old timeline (a promotion whose
            # checkpoint has not finished): pg_rewind then does nothing, and the node would
            # start on a diverged history.  Fail loudly; a CHECKPOINT on the source fixes it.
            raise TransientError(
                f"pg_rewind of {node} saw {source} on {node}'s own timeline; run CHECKPOINT on {source} and retry"
            )
        self._settle_copy(node, data, source)
        summary = _rewind_summary(out)
        return NodeOpResult(
            node=node,
            operation="rewind",
            changed=True,
            seconds=self._timed(started),
            detail=f"rewound {node} from {source} with pg_rewind in {self._timed(started):.1f} s "
            f"({summary}) and configured it as a standby of {source}",
        )

    def reclone(self, node: str, source: str) -> NodeOpResult:
        self.require_standing(node)
        started = time.monotonic()
        data = self.data_dir(node)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        fresh = data.with_name(f"{data.name}{RECLONE_MARK}{stamp}")
        if not data.parent.exists():
            data.parent.mkdir(parents=True)
            chown_to(data.parent, self.cluster.os_user)  # pg_basebackup runs as the server's user
        spec = self.cluster.nodes[source]
        info = conninfo_for(self.cluster, spec)
        try:
            pg_basebackup(
                fresh,
                host=spec.host,
                port=spec.port,
                user=self.cluster.replication_user,
                os_user=self.cluster.os_user,
                password=info.password,
            )
            self._settle_copy(node, fresh, source)
        except Exception:
            # The old data directory was never touched: leave the node as it was.
            shutil.rmtree(fresh, ignore_errors=True)
            raise
        ctl = self._pgctl(node)
        if (data / "PG_VERSION").exists() and ctl.is_running():
            ctl.stop("fast", timeout=60)
        set_aside = None
        if data.exists():
            set_aside = data.with_name(f"{data.name}{REPLACED_MARK}{stamp}")
            data.rename(set_aside)
        fresh.rename(data)
        kept = f"; the old data directory is kept at {set_aside} until the node is verified" if set_aside else ""
        return NodeOpResult(
            node=node,
            operation="reclone",
            changed=True,
            seconds=self._timed(started),
            detail=f"re-cloned {node} from {source} with pg_basebackup in {self._timed(started):.1f} s{kept}",
        )

    def remove_replaced(self, node: str) -> NodeOpResult:
        self.require_standing(node)
        data = self.data_dir(node)
        old = sorted(data.parent.glob(f"{data.name}{REPLACED_MARK}*"))
        for path in old:
            shutil.rmtree(path)
        return NodeOpResult(
            node=node,
            operation="remove-replaced",
            changed=bool(old),
            detail=f"removed {len(old)} set-aside data director{'y' if len(old) == 1 else 'ies'} of {node}",
        )

    # -- pgBackRest with the node's own configuration ---------------------------------
    def pgbackrest(self, node: str, command: PgBackRestCommand) -> PgBackRestRun:
        self.require_standing(node)
        return run_on_this_machine(self.topology, self.cluster_name, self.cluster.os_user, node, command)

    # -- restore's disk steps (regionops.backup.restore_on_host does the work) ----------------
    def restore_facts(self, node: str, repo: int = 1) -> RestoreDiskFacts:
        self.require_standing(node)
        return restore_on_host.disk_facts(self.topology, self.cluster_name, node, repo)

    def restore_stage(self, node: str, request: StageRequest) -> StagedRestore:
        self.require_standing(node)
        self._require_own_plan(node, request.plan)
        return restore_on_host.stage(self.topology, request)

    def restore_activate(self, node: str, request: ActivateRequest) -> ActivatedRestore:
        self.require_standing(node)
        self._require_own_plan(node, request.plan)
        return restore_on_host.activate(self.topology, request)

    def _require_own_plan(self, node: str, plan: RestorePlan) -> None:
        """A restore step touches only this node's data directory and the paths derived from it."""
        data = str(self.data_dir(node))
        expected = (self.cluster_name, node, data, f"{data}.restore-{plan.label}", f"{data}.pre-restore-{plan.label}")
        if (plan.cluster, plan.node, plan.data_dir, plan.staging_dir, plan.old_dir) != expected:
            raise PreconditionFailed(
                f"refusing to restore onto {node}: the plan names {plan.node} of {plan.cluster} with data directory "
                f"{plan.data_dir} (staging {plan.staging_dir}), not {node}'s {data}; nothing was changed"
            )


def _rewind_summary(output: str) -> str:
    """The lines of pg_rewind's output that say what it did."""
    wanted = ("servers diverged", "no rewind required", "need to copy")
    picked = [
        line.removeprefix("pg_rewind: ").strip() for line in output.splitlines() if any(w in line for w in wanted)
    ]
    return "; ".join(picked) or "done"
