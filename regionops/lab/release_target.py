"""The lab's release target: a version reaches a region by restarting its app process with it.

Chosen by :func:`regionops.release.targets.target_for` when the topology's
``application.release.target`` is ``lab`` (the drivers know nothing of the lab).
"""

from __future__ import annotations

import time
from pathlib import Path

from regionops.drivers.deploy import DeployResult, RunningVersion, app_version
from regionops.errors import ConfigurationError
from regionops.lab.apps import LabApps
from regionops.lab.config import LabConfig
from regionops.topology import Topology


class LabTarget:
    """The lab: write the region's VERSION file and restart its app process."""

    kind = "lab"

    def __init__(self, topology: Topology, lab_dir: str):
        self.topology = topology
        self.lab_dir = Path(lab_dir)

    def _apps(self) -> LabApps:
        cfg = LabConfig.load(self.lab_dir)
        if cfg is None:
            raise ConfigurationError(f"no lab in {self.lab_dir} (application.release.lab_dir)")
        return LabApps(cfg)

    def current(self, region: str) -> RunningVersion:
        """What the app answers on /version; the VERSION file when the app does not answer."""
        served = app_version(self.topology.regions[region].app_url)
        if served is not None:
            return RunningVersion(region=region, version=served, detail="app /version")
        path = self.lab_dir / "apps" / region / "VERSION"
        on_disk = path.read_text().strip() if path.exists() else None
        return RunningVersion(region=region, version=on_disk, detail="app not answering; VERSION file")

    def deploy(self, region: str, version: str, ref: str | None = None) -> DeployResult:
        """Restart the region's app with ``version``."""
        started = time.monotonic()
        self._apps().set_version(region, version)
        return DeployResult(
            region=region,
            version=version,
            target=self.kind,
            seconds=round(time.monotonic() - started, 2),
            output=f"app-{region} restarted with version {version}",
        )
