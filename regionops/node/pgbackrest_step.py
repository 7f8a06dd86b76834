"""pgBackRest through the node seam: one command on the node's machine, and the driver's Runner over it.

pgBackRest runs where PostgreSQL runs (it reads the data directory and the node's own
configuration file).  The runbook builds its command lines with
:class:`regionops.drivers.pgbackrest.PgBackRest` as usual, but with a
:class:`SeamRunner`: only the part after the binary, config and stanza (the driver's
``prefix()``) is shipped, and the node's side puts its own binary, config and stanza
back in front.  So a node step can run pgBackRest commands and nothing else, for its
own node's configuration only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pydantic import BaseModel, Field

from regionops.drivers.pgbackrest import BINARY, LocalRunner, PgBackRest, RunOutput, plan_stanza
from regionops.errors import ConfigurationError
from regionops.topology import Topology

# The commands a runbook may send (archive-push/-get belong to PostgreSQL's archiver).
ALLOWED_COMMANDS = frozenset({"backup", "check", "info", "verify", "expire", "restore", "stanza-create"})
# Options that would point the command at another node's configuration or stanza.
_FORBIDDEN_OPTIONS = ("--config", "--stanza", "--cmd")


class PgBackRestCommand(BaseModel):
    """One pgBackRest command for a node: the arguments after binary, config and stanza."""

    args: list[str] = Field(description="options, then the command, e.g. ['--type=incr', '--repo=1', 'backup']")
    timeout: float = Field(3600, gt=0, description="seconds before the command is stopped")

    def command(self) -> str:
        """The pgBackRest command word (the first argument that is not an option)."""
        return next((a for a in self.args if not a.startswith("-")), "")

    def check(self) -> PgBackRestCommand:
        """Itself, or a ConfigurationError when it is not a runbook's pgBackRest command."""
        if self.command() not in ALLOWED_COMMANDS:
            raise ConfigurationError(
                f"pgbackrest node step: command {self.command() or '(none)'!r} is not one of "
                f"{', '.join(sorted(ALLOWED_COMMANDS))}"
            )
        bad = [a for a in self.args if a.startswith(_FORBIDDEN_OPTIONS)]
        if bad:
            raise ConfigurationError(
                f"pgbackrest node step: {', '.join(bad)} not allowed (the node uses its own "
                "configuration and the cluster's stanza)"
            )
        return self


class PgBackRestRun(BaseModel):
    """What one pgBackRest command did on the node: exit code, output, seconds."""

    node: str
    args: list[str]
    exit_code: int
    stdout: str
    stderr: str
    seconds: float

    def sentence(self) -> str:
        """One line for logs and reports."""
        return (
            f"pgbackrest {PgBackRestCommand(args=self.args).command()} on {self.node} exited {self.exit_code} "
            f"in {self.seconds:.1f} s"
        )


def run_on_this_machine(
    topology: Topology, cluster: str, os_user: str | None, node: str, command: PgBackRestCommand
) -> PgBackRestRun:
    """Run ``command`` with ``node``'s own configuration on this machine (the caller checked where it stands)."""
    command.check()
    driver = PgBackRest(plan_stanza(topology, cluster), node, LocalRunner(os_user))
    out = driver.runner([*driver.prefix(), *command.args], timeout=command.timeout)
    return PgBackRestRun(
        node=node,
        args=command.args,
        exit_code=out.exit_code,
        stdout=out.stdout,
        stderr=out.stderr,
        seconds=round(out.seconds, 3),
    )


class RunsPgBackRest(Protocol):
    """The part of a node operator the runner needs."""

    def pgbackrest(self, node: str, command: PgBackRestCommand) -> PgBackRestRun: ...


class SeamRunner:
    """A pgBackRest :class:`~regionops.drivers.pgbackrest.Runner` that runs each command as a node step."""

    prefix_length = 3  # binary, --config, --stanza: PgBackRest.prefix(); the node puts its own back

    def __init__(self, operator: RunsPgBackRest, node: str):
        self.operator = operator
        self.node = node

    def __call__(self, argv: Sequence[str], *, timeout: float) -> RunOutput:
        run = self.operator.pgbackrest(
            self.node, PgBackRestCommand(args=list(argv[self.prefix_length :]), timeout=timeout)
        )
        return RunOutput(tuple(argv), run.exit_code, run.stdout, run.stderr, run.seconds)


def seam_driver(topology: Topology, cluster: str, node: str, operator: RunsPgBackRest) -> PgBackRest:
    """The pgBackRest driver of ``node`` whose commands run through ``operator`` (local or regional).

    The plan is made (residency checked) here, before any command can run.  The binary
    is the node's business: this machine need not have pgBackRest installed.
    """
    plan = plan_stanza(topology, cluster)
    topology.node(plan.cluster, node)
    return PgBackRest(plan, node, runner=SeamRunner(operator, node), binary_path=BINARY)
