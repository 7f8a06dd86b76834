"""The lab's apps component: one web app process per region, at the version in its VERSION file.

Its release target (:mod:`regionops.lab.release_target`) changes that file and restarts
one region's app; ``up`` builds the static assets of the lab's version and of the demo
versions the release runbook offers in the UI.
"""

from __future__ import annotations

from regionops.errors import ExternalSystemError
from regionops.lab.assets import build_assets
from regionops.lab.component import ComponentStatus, LabComponent, Observation, Progress
from regionops.lab.processes import port_open, stop, wait_port_free

DEMO_VERSIONS = ("1.1.0", "1.2.0", "2.0.0-bad", "2.0.0-slow")  # assets pre-built for releases from the UI


class LabApps(LabComponent):
    """The regional apps (``app-eu``, ``app-us``, ``app-apac``)."""

    def process_names(self) -> list[str]:
        """One process per region."""
        return [f"app-{r}" for r in self.cfg.ports.apps]

    def start(self, progress: Progress) -> None:
        """Build the versions' assets and start every app that is not running."""
        for version in (self.cfg.app_version, *DEMO_VERSIONS):
            build_assets(self.cfg.lab_dir, version)
        for region in self.cfg.ports.apps:
            self.start_app(region)

    def start_app(self, region: str) -> None:
        """Start one region's app at the version in its VERSION file (the lab's version the first time)."""
        cfg = self.cfg
        port = cfg.ports.apps[region]
        version_file = cfg.path("apps", region, "VERSION")
        if not version_file.exists():
            version_file.parent.mkdir(parents=True, exist_ok=True)
            version_file.write_text(cfg.app_version + "\n")
        self.start_process(
            f"app-{region}",
            [
                self.python,
                "-m",
                "regionops.lab.app",
                "--topology",
                str(cfg.topology_path),
                "--region",
                region,
                "--port",
                str(port),
                "--version-file",
                str(version_file),
                "--host",
                cfg.region_host(region),
            ],
            port,
            region=region,
        )

    def set_version(self, region: str, version: str) -> None:
        """Write the region's VERSION file and restart its app with it."""
        self.cfg.path("apps", region, "VERSION").write_text(version + "\n")
        stop(self.cfg.lab_dir, f"app-{region}")
        if not wait_port_free(self.cfg.ports.apps[region], 10, self.cfg.region_host(region)):
            # Something else answers on the app's port: a restart would "succeed" against it.
            raise ExternalSystemError(f"app-{region} stopped but port {self.cfg.ports.apps[region]} is still held")
        self.start_app(region)  # this region only: regions of one wave restart in parallel

    def status(self, seen: Observation) -> list[ComponentStatus]:
        """One line per app: region health's probe of it and its problems."""
        probes = {a.region: a for a in seen.report.apps} if seen.report else {}
        comps = []
        for region, port in self.cfg.ports.apps.items():
            problems = seen.problems_about(f"app {region}")
            probe = probes.get(region)
            comps.append(
                ComponentStatus(
                    name=f"app {region}",
                    endpoint=f"http://{self.cfg.region_host(region)}:{port}",
                    running=port_open(port, self.cfg.region_host(region)),
                    healthy=probe is not None and probe.healthy and not problems,
                    detail="; ".join(problems) or (probe.sentence() if probe else "not probed"),
                )
            )
        return comps
