"""The lab's quorum store: an etcd cluster with one member per region (Debian's ``etcd-server``).

Each member runs in its region (in a lab with a WAN, inside the region's namespace, so
the members' raft traffic crosses the WAN relay with the regions' real delays).  Its
timing follows etcd's tuning guide for a WAN: the heartbeat about the slowest round
trip between members, the election timeout ten times that.  A region outage stops its
member (the quorum keeps two of three); a partition cuts it off, and it then answers
nothing, because etcd serves reads and writes only with a majority.
"""

from __future__ import annotations

import hashlib
from itertools import combinations

from regionops.drivers.etcd import EtcdClient, QuorumRefused, QuorumUnavailable
from regionops.errors import ConfigurationError, ExternalSystemError
from regionops.lab.component import ComponentStatus, LabComponent, Observation, Progress
from regionops.lab.config import LAB_REGIONS, LabConfig
from regionops.lab.processes import running_pid, spawn, stop
from regionops.lab.wan import WanState, in_namespace
from regionops.monitoring.tools import ETCD
from regionops.waiting import poll_until

MIN_HEARTBEAT_MS = 100  # etcd's default: the loopback lab's members answer in microseconds
ELECTION_HEARTBEATS = 10  # etcd's guidance: election timeout >= 10x the heartbeat over a WAN


def etcd_binary() -> str:
    """The etcd server binary, or a ConfigurationError naming the package to install."""
    path = ETCD.find()
    if path is None:
        raise ConfigurationError(f"the lab's quorum store cannot start: {ETCD.missing()}")
    return path


def member_name(region: str) -> str:
    """The lab process (and etcd member) name of ``region``'s member."""
    return f"etcd-{region}"


def timing(cfg: LabConfig) -> tuple[int, int]:
    """(heartbeat, election timeout) in ms for the lab's WAN: heartbeat ~ the slowest RTT, election 10x."""
    profile = cfg.wan_profile()
    slowest = max(profile.rtt_ms(a, b) for a, b in combinations(LAB_REGIONS, 2))
    heartbeat = max(MIN_HEARTBEAT_MS, round(slowest))
    return heartbeat, heartbeat * ELECTION_HEARTBEATS


def client_url(cfg: LabConfig, region: str) -> str:
    """Where ``region``'s member answers clients."""
    return f"http://{cfg.region_host(region)}:{_ports(cfg)[0][region]}"


def peer_url(cfg: LabConfig, region: str) -> str:
    """Where ``region``'s member talks raft with the others."""
    return f"http://{cfg.region_host(region)}:{_ports(cfg)[1][region]}"


def endpoints(cfg: LabConfig) -> dict[str, str]:
    """region -> its member's client URL (the topology's ``quorum.endpoints``)."""
    return {r: client_url(cfg, r) for r in LAB_REGIONS}


def _ports(cfg: LabConfig) -> tuple[dict[str, int], dict[str, int]]:
    if not cfg.ports.etcd or not cfg.ports.etcd_peers:  # LabConfig.load gives an older lab its ports
        raise ConfigurationError(f"the lab in {cfg.lab_dir} has no ports for its etcd members")
    return cfg.ports.etcd, cfg.ports.etcd_peers


class LabQuorum(LabComponent):
    """One etcd member per region (``etcd-eu``, ``etcd-us``, ``etcd-apac``)."""

    def process_names(self) -> list[str]:
        """One member per region."""
        return [member_name(r) for r in LAB_REGIONS]

    def endpoints(self) -> dict[str, str]:
        """region -> its member's client URL."""
        return endpoints(self.cfg)

    def argv(self, region: str) -> list[str]:
        """The member's command line: its name, URLs, data directory and WAN timing."""
        heartbeat, election = timing(self.cfg)
        cluster = ",".join(f"{member_name(r)}={peer_url(self.cfg, r)}" for r in LAB_REGIONS)
        return [
            etcd_binary(),
            "--name",
            member_name(region),
            "--data-dir",
            str(self.cfg.path("etcd", region)),
            "--listen-client-urls",
            client_url(self.cfg, region),
            "--advertise-client-urls",
            client_url(self.cfg, region),
            "--listen-peer-urls",
            peer_url(self.cfg, region),
            "--initial-advertise-peer-urls",
            peer_url(self.cfg, region),
            # Read only when the data directory is new; a restarted member rejoins from its own data.
            "--initial-cluster",
            cluster,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            # One token per lab: members of two labs on one host never join each other.
            "regionops-lab-" + hashlib.sha1(str(self.cfg.lab_dir).encode()).hexdigest()[:12],
            "--heartbeat-interval",
            str(heartbeat),
            "--election-timeout",
            str(election),
            "--log-level",
            "warn",
        ]

    def start(self, progress: Progress = print, regions: list[str] | None = None) -> None:
        """Start the members that are not running, then wait until the cluster has a leader and answers."""
        started = []
        for region in regions or list(LAB_REGIONS):
            name = member_name(region)
            if running_pid(self.cfg.lab_dir, name):
                continue
            self.cfg.path("etcd").mkdir(parents=True, exist_ok=True)
            spawn(self.cfg.lab_dir, name, in_namespace(self.cfg.netns(region), self.argv(region)))
            started.append(region)
        if started:
            heartbeat, election = timing(self.cfg)
            names = ", ".join(member_name(r) for r in started)
            progress(f"started {names} (heartbeat {heartbeat} ms, election {election} ms)")
        poll_until(self.answers, timeout=60, interval=0.3, what="the lab's etcd cluster to elect a leader and answer")

    def answers(self) -> bool:
        """Whether the quorum answers a linearizable read now (raises when a member process died)."""
        for region in LAB_REGIONS:
            if running_pid(self.cfg.lab_dir, member_name(region)) is None and not self._stopped_on_purpose(region):
                tail = self.cfg.path("logs", f"{member_name(region)}.log").read_text(errors="replace").splitlines()[-5:]
                raise ExternalSystemError(f"{member_name(region)} exited: " + " | ".join(tail))
        client = EtcdClient(list(self.endpoints().values()), timeout=2)
        try:
            client.get("/regionops/lab-ping")
        except (QuorumUnavailable, QuorumRefused):  # no leader yet, or a member still joining
            return False
        finally:
            client.close()
        return True

    def _stopped_on_purpose(self, region: str) -> bool:
        # A region outage stops its member; the quorum answers with the other two.
        return self.cfg.wan_plan() is not None and region in WanState.load(self.cfg.wan_state_path).down

    def stop_region(self, region: str) -> bool:
        """Stop one region's member (a lost region)."""
        return stop(self.cfg.lab_dir, member_name(region))

    def status(self, seen: Observation) -> list[ComponentStatus]:
        """One line per member: running, and healthy when it sees a leader (etcd's /health)."""
        client = EtcdClient(list(self.endpoints().values()), timeout=1)
        try:
            lines = []
            for region, url in self.endpoints().items():
                running = running_pid(self.cfg.lab_dir, member_name(region)) is not None
                healthy = running and client.member_health(url)
                detail = (
                    "member of the quorum, sees a leader"
                    if healthy
                    else ("running, but sees no leader (cut off from the majority?)" if running else "not running")
                )
                lines.append(
                    ComponentStatus(
                        name=f"etcd {region}", endpoint=url, running=running, healthy=healthy, detail=detail
                    )
                )
            return lines
        finally:
            client.close()
