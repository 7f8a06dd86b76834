"""Release targets: how a version reaches a region, and which version runs there now.

One Protocol and two targets here; :func:`regionops.release.targets.target_for` chooses
one by the topology's ``application.release.target`` (the third, ``lab``, restarts the
lab's regional app process, and lives with the lab in its ``release_target`` module):

- ``command``: a templated shell command per region (``kubectl set image``, ``helm
  upgrade``, a deploy script), with a timeout; its output is kept for the run's logs.
- ``ecs``: a new task definition revision with the version's image, the region's service
  updated to it, and a wait until the service is stable.

Each target reports the version running now *and* a reference to return to
(``RunningVersion.ref``: the ECS task definition ARN), so a rollback goes back to exactly
what ran before, not to a rebuilt approximation of it.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import time
from typing import Any, Protocol

import httpx
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from regionops.drivers.aws import service_client, translate_error
from regionops.errors import ConfigurationError, ExternalSystemError, TransientError
from regionops.topology import Topology
from regionops.waiting import poll_until

log = logging.getLogger(__name__)
OUTPUT_LIMIT = 20_000  # characters of a command's output kept for the run's logs


class RunningVersion(BaseModel):
    """The version a region runs now, as its release target reports it."""

    region: str
    version: str | None
    ref: str | None = None
    detail: str = ""

    def sentence(self) -> str:
        """One line for logs and reports."""
        where = f" ({self.detail})" if self.detail else ""
        return f"{self.region} runs version {self.version or 'unknown'}{where}"


class DeployResult(BaseModel):
    """One region deployed: what, how long it took, and what the target printed."""

    region: str
    version: str
    target: str
    seconds: float
    ref: str | None = None
    output: str = ""

    def sentence(self) -> str:
        """One line for logs and reports."""
        return f"deployed {self.version} to {self.region} with the {self.target} target in {self.seconds:.1f} s"


class ReleaseTarget(Protocol):
    """Where a release goes.  ``ref`` (from :class:`RunningVersion`) returns to an exact previous state."""

    kind: str

    def current(self, region: str) -> RunningVersion: ...
    def deploy(self, region: str, version: str, ref: str | None = None) -> DeployResult: ...


def app_version(base_url: str, client: httpx.Client | None = None) -> str | None:
    """The version an app says it serves (``GET /version``), or None when it does not answer."""
    client = client or httpx.Client(timeout=3)
    try:
        resp = client.get(base_url.rstrip("/") + "/version")
        return str(resp.json().get("version")) if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None


def render(template: str, **values: str) -> str:
    """``template`` with each ``{name}`` replaced by the shell-quoted value (no injection via a version)."""
    try:
        return template.format(**{k: shlex.quote(v) for k, v in values.items()})
    except (KeyError, IndexError) as exc:
        raise ConfigurationError(f"command template {template!r} uses an unknown placeholder {exc}") from exc


def run_command(command: str, timeout: float, what: str) -> str:
    """Run ``command`` with ``/bin/sh -c``; return its output (stdout and stderr together).

    A command still running after ``timeout`` seconds is killed with its whole process
    group (a shell's children too) and raises TransientError; a non-zero exit raises
    ExternalSystemError with the output's tail.
    """
    proc = subprocess.Popen(
        ["/bin/sh", "-c", command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        raise TransientError(
            f"{what}: command timed out after {timeout:g} s and was killed; output: {_tail(output)}"
        ) from None
    if proc.returncode != 0:
        raise ExternalSystemError(f"{what}: command exited {proc.returncode}; output: {_tail(output)}")
    return output[-OUTPUT_LIMIT:]


def _tail(output: str | None, chars: int = 500) -> str:
    text = (output or "").strip()
    return text[-chars:] if text else "(none)"


class CommandTarget:
    """A templated shell command per region; the version is read by a command or from the app."""

    kind = "command"

    def __init__(self, topology: Topology):
        self.topology = topology
        app = topology.app()
        if app.release.command is None:
            raise ConfigurationError("application.release.command is required for the command target")
        self.settings = app.release.command
        self.application = app.name

    def _values(self, region: str, version: str = "") -> dict[str, str]:
        return {
            "region": region,
            "aws_region": self.topology.regions[region].aws_region,
            "version": version,
            "application": self.application,
        }

    def current(self, region: str) -> RunningVersion:
        """The version-command's last output line, or the app's /version."""
        if self.settings.current_version:
            command = render(self.settings.current_version, **self._values(region))
            output = run_command(command, self.settings.timeout_seconds, f"version of {region}")
            lines = [line.strip() for line in output.splitlines() if line.strip()]
            return RunningVersion(region=region, version=lines[-1] if lines else None, detail="version command")
        return RunningVersion(
            region=region, version=app_version(self.topology.regions[region].app_url), detail="app /version"
        )

    def deploy(self, region: str, version: str, ref: str | None = None) -> DeployResult:
        """Run the deploy command for ``region`` and ``version``."""
        started = time.monotonic()
        command = render(self.settings.deploy, **self._values(region, version))
        log.info("deploying %s to %s: %s", version, region, command)
        output = run_command(command, self.settings.timeout_seconds, f"deploy of {version} to {region}")
        return DeployResult(
            region=region,
            version=version,
            target=self.kind,
            seconds=round(time.monotonic() - started, 2),
            output=output,
        )


def image_version(image: str) -> str | None:
    """The tag of an image reference (``registry:5000/app:1.2.3`` -> ``1.2.3``), None without a tag."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else None


# Fields of a task definition that a new revision must carry over (describe returns more).
_REGISTRABLE = (
    "family",
    "taskRoleArn",
    "executionRoleArn",
    "networkMode",
    "containerDefinitions",
    "volumes",
    "placementConstraints",
    "requiresCompatibilities",
    "cpu",
    "memory",
    "runtimePlatform",
    "pidMode",
    "ipcMode",
    "proxyConfiguration",
    "inferenceAccelerators",
    "ephemeralStorage",
)


class EcsTarget:
    """An ECS service per region: register a task definition revision, update the service, wait until stable."""

    kind = "ecs"

    def __init__(self, topology: Topology, client_for: Any = None, poll_interval: float = 1.0):
        self.topology = topology
        app = topology.app()
        if app.release.ecs is None:
            raise ConfigurationError("application.release.ecs is required for the ecs target")
        self.settings = app.release.ecs
        self._client_for = client_for or (lambda aws_region: service_client(topology, "ecs", aws_region))
        self._clients: dict[str, Any] = {}
        self.poll_interval = poll_interval

    def _client(self, region: str) -> Any:
        aws_region = self.topology.regions[region].aws_region
        if aws_region not in self._clients:
            self._clients[aws_region] = self._client_for(aws_region)
        return self._clients[aws_region]

    def _names(self, region: str) -> tuple[str, str]:
        return self.settings.cluster.format(region=region), self.settings.service.format(region=region)

    def _call(self, region: str, what: str, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client(region), method)(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise translate_error(exc, f"ECS {what} in {region}") from exc

    def _service(self, region: str) -> dict[str, Any]:
        cluster, service = self._names(region)
        reply = self._call(
            region, f"service {cluster}/{service}", "describe_services", cluster=cluster, services=[service]
        )
        found = [s for s in reply.get("services", []) if s.get("status") != "INACTIVE"]
        if not found:
            raise ExternalSystemError(f"ECS service {cluster}/{service} in {region} does not exist")
        return found[0]

    def _task_definition(self, region: str, arn: str) -> dict[str, Any]:
        return self._call(region, f"task definition {arn}", "describe_task_definition", taskDefinition=arn)[
            "taskDefinition"
        ]

    def _container(self, taskdef: dict[str, Any]) -> dict[str, Any]:
        for container in taskdef.get("containerDefinitions", []):
            if container.get("name") == self.settings.container:
                return container
        raise ConfigurationError(
            f"task definition {taskdef.get('taskDefinitionArn')} has no container {self.settings.container!r}"
        )

    def current(self, region: str) -> RunningVersion:
        """The image tag of the service's task definition, with the task definition ARN as the ref."""
        arn = self._service(region)["taskDefinition"]
        image = self._container(self._task_definition(region, arn)).get("image", "")
        return RunningVersion(region=region, version=image_version(image), ref=arn, detail=f"task definition {arn}")

    def deploy(self, region: str, version: str, ref: str | None = None) -> DeployResult:
        """Point the service at ``ref`` (rollback) or at a new revision with the version's image; wait until stable."""
        started = time.monotonic()
        cluster, service = self._names(region)
        arn = ref or self._register(region, version)
        self._call(
            region,
            f"service {cluster}/{service}",
            "update_service",
            cluster=cluster,
            service=service,
            taskDefinition=arn,
        )
        poll_until(
            lambda: self._stable(region, arn),
            timeout=self.settings.stable_timeout_seconds,
            interval=self.poll_interval,
            what=f"ECS service {cluster}/{service} in {region} to be stable",
        )
        return DeployResult(
            region=region,
            version=version,
            target=self.kind,
            ref=arn,
            seconds=round(time.monotonic() - started, 2),
            output=f"service {cluster}/{service} runs {arn}",
        )

    def _register(self, region: str, version: str) -> str:
        current = self._task_definition(region, self._service(region)["taskDefinition"])
        spec = {k: current[k] for k in _REGISTRABLE if current.get(k) not in (None, [], {})}
        image = self.settings.image.format(version=version, region=region)
        spec["containerDefinitions"] = [
            {**c, "image": image} if c.get("name") == self.settings.container else c
            for c in current["containerDefinitions"]
        ]
        reply = self._call(region, f"task definition {spec['family']}", "register_task_definition", **spec)
        arn = reply["taskDefinition"]["taskDefinitionArn"]
        log.info("registered %s with image %s", arn, image)
        return arn

    def _stable(self, region: str, arn: str) -> bool:
        """ECS's own definition: one deployment, on the wanted revision, running what it wants."""
        svc = self._service(region)
        deployments = svc.get("deployments", [])
        if any(d.get("rolloutState") == "FAILED" for d in deployments):
            reason = next(d.get("rolloutStateReason") for d in deployments if d.get("rolloutState") == "FAILED")
            raise ExternalSystemError(f"ECS deployment of {arn} in {region} failed: {reason}")
        return (
            svc.get("taskDefinition") == arn
            and len(deployments) <= 1
            and svc.get("runningCount", 0) >= svc.get("desiredCount", 0)
        )
