"""The monitoring binaries: where they are and which Debian package provides each.

Debian renames some upstream binaries (``prometheus-alertmanager``,
``prometheus-postgres-exporter``, ``prometheus-pushgateway``); both names are accepted.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass


@dataclass(frozen=True)
class Tool:
    """One monitoring program: its names on PATH (first found wins) and its Debian package."""

    name: str
    binaries: tuple[str, ...]
    package: str

    def find(self) -> str | None:
        """The path of the binary, or None when not installed."""
        for binary in self.binaries:
            path = shutil.which(binary)
            if path:
                return path
        return None

    def missing(self) -> str:
        """Why it cannot run, naming the package: ``prometheus is not installed (apt-get install prometheus)``."""
        return (
            f"{self.name} is not installed: none of {', '.join(self.binaries)} on PATH "
            f"(Debian: apt-get install {self.package})"
        )


PROMETHEUS = Tool("prometheus", ("prometheus",), "prometheus")
PROMTOOL = Tool("promtool", ("promtool",), "prometheus")
ALERTMANAGER = Tool("alertmanager", ("alertmanager", "prometheus-alertmanager"), "prometheus-alertmanager")
AMTOOL = Tool("amtool", ("amtool",), "prometheus-alertmanager")
POSTGRES_EXPORTER = Tool(
    "postgres_exporter", ("postgres_exporter", "prometheus-postgres-exporter"), "prometheus-postgres-exporter"
)
PUSHGATEWAY = Tool("pushgateway", ("pushgateway", "prometheus-pushgateway"), "prometheus-pushgateway")

LAB_TOOLS: tuple[Tool, ...] = (PROMETHEUS, ALERTMANAGER, POSTGRES_EXPORTER, PUSHGATEWAY)
ALL_TOOLS: tuple[Tool, ...] = (*LAB_TOOLS, PROMTOOL, AMTOOL)
# Not monitoring, but installed the same way: the backup engine.  The lab needs it (every
# node archives WAL through it) and says so when it is missing.
PGBACKREST = Tool("pgbackrest", ("pgbackrest",), "pgbackrest")
# And the quorum store: one etcd member per region holds what every region must agree on.
ETCD = Tool("etcd", ("etcd",), "etcd-server")
REQUIRED_TOOLS: tuple[Tool, ...] = (PGBACKREST, ETCD)
# Nor these: the lab's WAN (`lab up --wan`, the demo's default) builds namespaces, links and nft rules.
WAN_TOOLS: tuple[Tool, ...] = (Tool("ip", ("ip",), "iproute2"), Tool("nft", ("nft",), "nftables"))


def missing_tools(tools: tuple[Tool, ...] = LAB_TOOLS) -> list[Tool]:
    """The tools of ``tools`` that are not installed."""
    return [t for t in tools if t.find() is None]


def packages_for(tools: list[Tool]) -> list[str]:
    """The Debian packages that provide ``tools``, each once, in order."""
    return list(dict.fromkeys(t.package for t in tools))


def main(argv: list[str] | None = None) -> int:
    """``python -m regionops.monitoring.tools [--install]``: report (and, as root, install) what is missing.

    Exits 1 when pgBackRest or etcd (required by the lab) is still missing; missing monitoring
    tools are only named (the lab runs without monitoring).
    """
    import argparse
    import os
    import subprocess

    parser = argparse.ArgumentParser(prog="python -m regionops.monitoring.tools", description=main.__doc__)
    parser.add_argument("--install", action="store_true", help="apt-get install the missing packages when root")
    args = parser.parse_args(argv)
    every = (*REQUIRED_TOOLS, *ALL_TOOLS, *WAN_TOOLS)
    missing = missing_tools(every)
    if not missing:
        return 0
    packages = packages_for(missing)
    if args.install and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing the lab's tools: {' '.join(packages)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], check=True, env=env)
        missing = missing_tools(every)
        if not missing:
            return 0
    required = [t for t in missing if t in REQUIRED_TOOLS]
    for tool in required:
        print(f"error: {tool.missing()}; the lab cannot start without it")
    for tool in (t for t in missing if t in WAN_TOOLS):
        print(f"note: {tool.missing()}; the lab runs without its WAN (--wan off)")
    missing = [t for t in missing if t not in REQUIRED_TOOLS and t not in WAN_TOOLS]
    if not missing:
        return 1 if required else 0
    for tool in missing:
        print(f"note: {tool.missing()}")
    print(
        "the lab runs without monitoring; the monitoring tests fail until these are installed "
        f"(apt-get install {' '.join(packages_for(missing))})"
    )
    return 1 if required else 0


if __name__ == "__main__":
    raise SystemExit(main())
