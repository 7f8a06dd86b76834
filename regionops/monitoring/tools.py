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
        return (f"{self.name} is not installed: none of {', '.join(self.binaries)} on PATH "
                f"(Debian: apt-get install {self.package})")


PROMETHEUS = Tool("prometheus", ("prometheus",), "prometheus")
PROMTOOL = Tool("promtool", ("promtool",), "prometheus")
ALERTMANAGER = Tool("alertmanager", ("alertmanager", "prometheus-alertmanager"), "prometheus-alertmanager")
AMTOOL = Tool("amtool", ("amtool",), "prometheus-alertmanager")
POSTGRES_EXPORTER = Tool("postgres_exporter", ("postgres_exporter", "prometheus-postgres-exporter"),
                         "prometheus-postgres-exporter")
PUSHGATEWAY = Tool("pushgateway", ("pushgateway", "prometheus-pushgateway"), "prometheus-pushgateway")

LAB_TOOLS: tuple[Tool, ...] = (PROMETHEUS, ALERTMANAGER, POSTGRES_EXPORTER, PUSHGATEWAY)
ALL_TOOLS: tuple[Tool, ...] = (*LAB_TOOLS, PROMTOOL, AMTOOL)


def missing_tools(tools: tuple[Tool, ...] = LAB_TOOLS) -> list[Tool]:
    """The tools of ``tools`` that are not installed."""
    return [t for t in tools if t.find() is None]


def packages_for(tools: list[Tool]) -> list[str]:
    """The Debian packages that provide ``tools``, each once, in order."""
    return list(dict.fromkeys(t.package for t in tools))
