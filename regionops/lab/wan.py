"""The lab's wide-area network: a network namespace per region and for the ops site, and delay between them.

::

                      operator host (tests, CLI; the control plane's processes on loopback;
                      the AWS backbone: moto for S3 storage and Route53)
         10.B.0.1 ───┬──────────────────┬──────────────────┬──────────────────┬────
                     │ veth roNh1       │ veth roNh2       │ veth roNh3       │ veth roNh4
        nft: cross-site TCP ──► wan relay (delay, jitter, loss, cuts) ──► destination
                     │                  │                  │                  │
              ┌──────┴──────┐    ┌──────┴──────┐    ┌──────┴──────┐    ┌──────┴──────┐
              │ ns roN-eu   │    │ ns roN-us   │    │ ns roN-apac │    │ ns roN-ops  │
              │ 10.B.1.2    │    │ 10.B.2.2    │    │ 10.B.3.2    │    │ 10.B.4.2    │
              │ eu-1, app,  │    │ us-1, app,  │    │ apac-1, app,│    │ the control │
              │ S3 endpoint │    │ S3 endpoint │    │ S3 endpoint │    │ plane's     │
              │ executor,   │    │ executor,   │    │ executor,   │    │ address;    │
              │ worker      │    │ worker      │    │ worker      │    │ runbooks    │
              └─────────────┘    └─────────────┘    └─────────────┘    └─────────────┘

Each region, and the ops site (the control plane, outside the regions it protects), is a
namespace with one address (``10.B.i.2``) on a veth pair to the host.
The kernel enforces that nothing crosses regions except through the host: packets are
never forwarded between the veths (an nft ``forward`` rule drops them), and every TCP
connection from one region to another region's address is redirected (nft ``redirect``)
to the **wan relay** (:mod:`regionops.lab.relay`), a userspace process on the host that
reads the connection's original destination and forwards its bytes after the one-way
delay between the two regions.  The kernel here has no netem, so the delay is the
relay's; a TCP stream cannot lose bytes, so ``wan-degraded``'s loss is modelled as the
retransmission delay a lost segment costs.

The host is the operator's VPN: it reaches every region's address directly (no delay,
no cut), so tests and people observe every node during any fault.  Region processes
reach the host's backbone address ``10.B.0.1`` (the AWS backbone: Route53's answers and
S3's storage behind each region's own endpoint) without delay.

A partition of region R is two nft rules (R's packets to other regions, and other
regions' packets to R, are dropped before the relay sees them), so established
connections stall as on a real partition instead of being reset.

This module holds the WAN profiles, the addressing plan and the nft ruleset (pure,
unit-tested), and applies and removes them with ``ip`` and ``nft``.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from regionops.errors import ConfigurationError, ExternalSystemError

# Public AWS inter-region round-trip times (ms): us-east-1<->eu-west-1, us-east-1<->ap-southeast-1,
# eu-west-1<->ap-southeast-1.  One-way delay is half.
REALISTIC_RTT_MS: dict[frozenset[str], float] = {
    frozenset({"eu", "us"}): 80.0,
    frozenset({"us", "apac"}): 217.0,
    frozenset({"eu", "apac"}): 239.0,
    # The ops site (the control plane) stands in a fourth region, outside the three it
    # protects: us-east-2's public round trips to us-east-1, eu-west-1 and ap-southeast-1.
    frozenset({"ops", "us"}): 13.0,
    frozenset({"ops", "eu"}): 87.0,
    frozenset({"ops", "apac"}): 200.0,
}
OPS_SITE = "ops"  # the control plane's site: Prefect's API, Slack, Alertmanager and Prometheus are reached here
JITTER_FRACTION = 0.05  # +-5 % of the one-way delay, per chunk, order kept
SITE_ORDER = ("eu", "us", "apac")  # a region's index in the addressing plan is its place here, from 1
MAX_LABS = 50  # labs side by side on one host (each takes a /16 of 10.0.0.0/8)
FIRST_OCTET = 10
SECOND_OCTET_BASE = 150


@dataclass(frozen=True)
class WanProfile:
    """How slow the WAN is: ``off`` (no namespaces: the loopback lab), ``realistic`` or ``scaled:F``."""

    name: str
    factor: float  # the realistic delays times this (0 for a WAN without delay)

    @property
    def namespaced(self) -> bool:
        """True when the lab's regions are namespaces (every profile but ``off``)."""
        return self.name != "off"

    def rtt_ms(self, a: str, b: str) -> float:
        """The round-trip time between two regions under this profile (0 within a region)."""
        if a == b or not self.namespaced:
            return 0.0
        return REALISTIC_RTT_MS[frozenset({a, b})] * self.factor

    def one_way_ms(self, a: str, b: str) -> float:
        """The one-way delay from ``a`` to ``b``."""
        return self.rtt_ms(a, b) / 2


def parse_wan(text: str) -> WanProfile:
    """``off``, ``realistic`` or ``scaled:F`` (F >= 0); a ConfigurationError names anything else."""
    value = text.strip().lower()
    if value in ("off", "realistic"):
        return WanProfile(value, 0.0 if value == "off" else 1.0)
    match = re.fullmatch(r"scaled:(\d+(?:\.\d+)?)", value)
    if match:
        return WanProfile(value, float(match.group(1)))
    raise ConfigurationError(f"--wan {text!r}: expected off, realistic or scaled:F (F a number, e.g. scaled:0.1)")


@dataclass(frozen=True)
class WanPlan:
    """The addresses and names of one lab's WAN (lab number ``index`` on this host)."""

    index: int
    regions: tuple[str, ...] = SITE_ORDER

    @property
    def sites(self) -> tuple[str, ...]:
        """The regions and the ops site: every namespace of the lab."""
        return (*self.regions, OPS_SITE)

    def __post_init__(self) -> None:
        if not 0 <= self.index < MAX_LABS:
            raise ConfigurationError(f"WAN lab index {self.index} is outside 0..{MAX_LABS - 1}")

    @property
    def prefix(self) -> str:
        """The lab's /16, e.g. ``10.150``."""
        return f"{FIRST_OCTET}.{SECOND_OCTET_BASE + self.index}"

    @property
    def subnet(self) -> str:
        return f"{self.prefix}.0.0/16"

    @property
    def backbone(self) -> str:
        """The host's address every region reaches without delay (the AWS backbone, the operator host)."""
        return f"{self.prefix}.0.1"

    def number(self, region: str) -> int:
        return self.sites.index(region) + 1

    def address(self, region: str) -> str:
        """Where the region's services listen (inside its namespace)."""
        return f"{self.prefix}.{self.number(region)}.2"

    def gateway(self, region: str) -> str:
        """The host's end of the region's veth pair."""
        return f"{self.prefix}.{self.number(region)}.1"

    def region_subnet(self, region: str) -> str:
        return f"{self.prefix}.{self.number(region)}.0/24"

    def region_of(self, address: str) -> str | None:
        """The region an address belongs to (its namespace's or the host's end of its veth), or None."""
        parts = address.split(".")
        if len(parts) != 4 or ".".join(parts[:2]) != self.prefix:
            return None
        n = int(parts[2])
        return self.sites[n - 1] if 1 <= n <= len(self.sites) else None

    def netns(self, region: str) -> str:
        return f"ro{self.index}-{region}"

    @property
    def host_netns(self) -> str:
        """The name under which the host's own network namespace is referenced."""
        return f"ro{self.index}-host"

    def host_link(self, region: str) -> str:
        return f"ro{self.index}h{self.number(region)}"

    def ns_link(self, region: str) -> str:
        return f"ro{self.index}n{self.number(region)}"

    @property
    def table(self) -> str:
        """The lab's own nft table (nothing else on the host is touched)."""
        return f"regionops_{self.index}"

    def link_prefix(self) -> str:
        """Host-side veth names all start with this (nft's interface wildcard)."""
        return f"ro{self.index}h"


@dataclass
class WanState:
    """What the relay and the rules act on now: the profile, cut regions, degraded regions."""

    profile: str = "off"
    partitioned: list[str] = field(default_factory=list)
    degraded: dict[str, dict[str, float]] = field(default_factory=dict)  # region -> extra_ms, loss
    down: list[str] = field(default_factory=list)  # regions in an outage (their processes stopped)

    @classmethod
    def load(cls, path: Path) -> WanState:
        if not path.exists():
            return cls()
        data = json.loads(path.read_text())
        return cls(
            data.get("profile", "off"),
            list(data.get("partitioned", [])),
            dict(data.get("degraded", {})),
            list(data.get("down", [])),
        )

    def save(self, path: Path) -> None:
        """Write atomically: the relay reads it whenever it changes."""
        tmp = path.with_suffix(".tmp")
        body = {"profile": self.profile, "partitioned": self.partitioned, "degraded": self.degraded, "down": self.down}
        tmp.write_text(json.dumps(body))
        tmp.replace(path)


def ruleset(plan: WanPlan, relay_port: int, partitioned: list[str], aws_port: int | None = None) -> str:
    """The lab's nft table: redirect cross-region TCP to the relay, forward nothing, drop what a partition cuts.

    A partition drops the region's packets to the other regions and theirs to it, and
    its packets to the control plane on the backbone (the ops site: Prefect), all but
    ``aws_port`` (AWS's own network behind the region's S3 endpoint, and Route53's answers,
    which every region gets from a nearby edge).  The host keeps reaching the region (the
    operator's VPN: the region's answers go to the host's end of its veth).
    """
    links = plan.link_prefix() + "*"
    lines = [
        f"table ip {plan.table} {{",
        # Before NAT, so a cut also stalls connections the relay already carries (as a real partition does).
        "  chain cut {",
        "    type filter hook prerouting priority raw; policy accept;",
    ]
    for region in partitioned:
        others = ", ".join(plan.region_subnet(r) for r in plan.sites if r != region)
        lines.append(f'    iifname "{plan.host_link(region)}" ip daddr {{ {others} }} drop')
        aws = f" tcp dport != {aws_port}" if aws_port else ""
        lines.append(f'    iifname "{plan.host_link(region)}" ip daddr {plan.backbone}{aws} drop')
        lines.append(
            f'    iifname "{links}" iifname != "{plan.host_link(region)}" ip daddr {plan.region_subnet(region)} drop'
        )
    lines += [
        "  }",
        "  chain wan {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        f'    iifname "{links}" ip daddr {plan.subnet} fib daddr type != local'
        f" meta l4proto tcp redirect to :{relay_port}",
        "  }",
        "  chain no_bypass {",
        "    type filter hook forward priority filter; policy accept;",
        f'    iifname "{links}" drop',
        f'    oifname "{links}" drop',
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def require_tools() -> None:
    """``ip`` and ``nft`` must be installed, and we must be root: named with the package to install."""
    missing = [t for t, pkg in (("ip", "iproute2"), ("nft", "nftables")) if shutil.which(t) is None]
    if missing:
        raise ConfigurationError(
            f"--wan needs {' and '.join(missing)} (Debian: apt-get install iproute2 nftables), or use --wan off"
        )
    if os.geteuid() != 0:
        raise ConfigurationError("--wan needs root (network namespaces and nft rules); run as root or use --wan off")


CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")


def _host_reference() -> Path | None:
    """A named reference to the host's network namespace (``ro<N>-host``, made by ``build``), if any."""
    refs = sorted(NETNS_DIR.glob("ro*-host")) if NETNS_DIR.is_dir() else []
    return refs[0] if refs else None


def _on_host_network(ref: Path | None) -> bool:
    """True when this thread is in the host's network namespace (or no lab has named it)."""
    if ref is None:
        return True
    try:
        return os.stat(ref).st_ino == os.stat("/proc/thread-self/ns/net").st_ino
    except OSError:
        return True


@contextmanager
def host_network() -> Iterator[None]:
    """Run the block (this thread, and what it starts) in the host's network namespace.

    The lab's hands (faults, heal) act on the host: its loopback services, its links and
    rules, the processes it starts.  A drill run in the ops site, as production runs it,
    calls them from the ops site's namespace, where ``127.0.0.1`` is another machine's
    loopback; so the calling thread steps into the host's namespace for the block and
    back after it (``setns`` acts on one thread only).  The host's namespace is found by
    the reference ``build`` names (``/proc/1`` may not be readable in a container).
    """
    ref = _host_reference()
    if _on_host_network(ref):
        yield
        return
    assert ref is not None
    libc = ctypes.CDLL(None, use_errno=True)
    with open(ref) as host, open("/proc/thread-self/ns/net") as here:
        if libc.setns(host.fileno(), CLONE_NEWNET) != 0:
            raise ExternalSystemError(f"cannot enter the host's network namespace: {os.strerror(ctypes.get_errno())}")
        try:
            yield
        finally:
            libc.setns(here.fileno(), CLONE_NEWNET)


def _in_host_network(argv: list[str]) -> list[str]:
    """``argv`` run in the host's network namespace, also when called from a site's."""
    ref = _host_reference()
    return argv if _on_host_network(ref) else ["nsenter", f"--net={ref}", *argv]


def _run(argv: list[str], check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = _in_host_network(argv)
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise ExternalSystemError(f"{' '.join(argv)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def existing_namespaces() -> set[str]:
    """Every network namespace on this host, by name."""
    out = _run(["ip", "netns", "list"], check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def free_index(taken: set[int] | None = None) -> int:
    """A lab index whose namespaces do not exist on this host yet."""
    names = existing_namespaces()
    used = {int(m.group(1)) for n in names if (m := re.fullmatch(r"ro(\d+)-\w+", n))} | (taken or set())
    for index in range(MAX_LABS):
        if index not in used:
            return index
    raise ExternalSystemError(f"all {MAX_LABS} WAN lab slots on this host are taken (ip netns list)")


def build(plan: WanPlan) -> list[str]:
    """Create the namespaces, veth pairs, addresses and routes that are missing (idempotent); say what was made."""
    made = []
    have = existing_namespaces()
    for region in plan.sites:
        ns, host, inner = plan.netns(region), plan.host_link(region), plan.ns_link(region)
        if ns not in have:
            _run(["ip", "netns", "add", ns])
            made.append(f"namespace {ns}")
        if not _link_exists(host):
            _run(["ip", "link", "add", host, "type", "veth", "peer", "name", inner])
            _run(["ip", "link", "set", inner, "netns", ns])
            made.append(f"link {host}")
        prefix = f"{plan.gateway(region)}/24"
        if prefix.split("/")[0] not in _run(["ip", "-4", "addr", "show", host]).stdout:
            _run(["ip", "addr", "add", prefix, "dev", host])
        _run(["ip", "link", "set", host, "up"])
        inside = ["ip", "netns", "exec", ns]
        if plan.address(region) not in _run([*inside, "ip", "-4", "addr", "show", inner]).stdout:
            _run([*inside, "ip", "addr", "add", f"{plan.address(region)}/24", "dev", inner])
        _run([*inside, "ip", "link", "set", inner, "up"])
        _run([*inside, "ip", "link", "set", "lo", "up"])
        _run([*inside, "ip", "route", "replace", "default", "via", plan.gateway(region)])
    if not _backbone_exists(plan):
        _run(["ip", "addr", "add", f"{plan.backbone}/32", "dev", "lo"])
        made.append(f"backbone address {plan.backbone}")
    if plan.host_netns not in have and _on_host_network(_host_reference()):
        # So code running in a site (a drill in the ops site) can find the host's network.
        _run(["ip", "netns", "attach", plan.host_netns, str(os.getpid())])
        made.append(f"host network reference {plan.host_netns}")
    return made


def apply_rules(plan: WanPlan, relay_port: int, partitioned: list[str], aws_port: int | None = None) -> None:
    """Replace the lab's nft table with the rules for now (atomically: one nft transaction)."""
    text = ruleset(plan, relay_port, partitioned, aws_port)
    prelude = f"delete table ip {plan.table}\n" if _table_exists(plan) else ""
    _run(["nft", "-f", "-"], stdin=prelude + text)


def _link_exists(name: str) -> bool:
    return _run(["ip", "link", "show", name], check=False).returncode == 0


def _table_exists(plan: WanPlan) -> bool:
    return (
        shutil.which("nft") is not None
        and _run(["nft", "list", "table", "ip", plan.table], check=False).returncode == 0
    )


def _backbone_exists(plan: WanPlan) -> bool:
    return f"{plan.backbone}/32" in _run(["ip", "-4", "addr", "show", "lo"], check=False).stdout


def teardown(plan: WanPlan) -> list[str]:
    """Remove every namespace, link, address and rule of this lab; say what was removed."""
    removed = []
    if _table_exists(plan):
        _run(["nft", "delete", "table", "ip", plan.table])
        removed.append(f"nft table {plan.table}")
    have = existing_namespaces()
    for region in plan.sites:
        if _link_exists(plan.host_link(region)):
            _run(["ip", "link", "del", plan.host_link(region)], check=False)
            removed.append(f"link {plan.host_link(region)}")
        if plan.netns(region) in have:
            _run(["ip", "netns", "del", plan.netns(region)])
            removed.append(f"namespace {plan.netns(region)}")
    if _backbone_exists(plan):
        _run(["ip", "addr", "del", f"{plan.backbone}/32", "dev", "lo"], check=False)
        removed.append(f"backbone address {plan.backbone}")
    if plan.host_netns in have:
        # Only the name goes: the host's namespace itself lives on, as every host process uses it.
        _run(["ip", "netns", "del", plan.host_netns], check=False)
        removed.append(f"host network reference {plan.host_netns}")
    return removed


def leftovers(plan: WanPlan) -> list[str]:
    """What of this lab's WAN still exists on the host (empty after a clean ``down``)."""
    have = existing_namespaces()
    left = [f"namespace {n}" for n in (*(plan.netns(r) for r in plan.sites), plan.host_netns) if n in have]
    left += [f"link {plan.host_link(r)}" for r in plan.sites if _link_exists(plan.host_link(r))]
    if _table_exists(plan):
        left.append(f"nft table {plan.table}")
    if _backbone_exists(plan):
        left.append(f"backbone address {plan.backbone}")
    return left


def in_namespace(netns: str | None, argv: list[str]) -> list[str]:
    """``argv`` run inside ``netns`` (unchanged when None)."""
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
