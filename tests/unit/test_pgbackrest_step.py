"""The pgbackrest node step: what it accepts, and the driver's runner over the node seam (fakes, no I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest

from regionops.errors import ConfigurationError, TransientError
from regionops.node.messages import NodeOpParams, NodeOpReply
from regionops.node.pgbackrest_step import PgBackRestCommand, PgBackRestRun, seam_driver
from regionops.topology import load_topology

EXAMPLE = Path(__file__).parents[2] / "deployments" / "topologies" / "example-aws.yaml"


class FakeOperator:
    """Records each pgbackrest step and answers as told."""

    def __init__(self, exit_code: int = 0, stdout: str = "", stderr: str = ""):
        self.steps: list[tuple[str, PgBackRestCommand]] = []
        self.answer = (exit_code, stdout, stderr)

    def pgbackrest(self, node: str, command: PgBackRestCommand) -> PgBackRestRun:
        self.steps.append((node, command))
        code, out, err = self.answer
        return PgBackRestRun(node=node, args=command.args, exit_code=code, stdout=out, stderr=err, seconds=1.5)


def test_only_the_arguments_after_binary_config_and_stanza_travel_and_the_label_comes_back():
    op = FakeOperator(stdout="P00   INFO: new backup label = 20261125-013000F_20261125-020000I\n")
    driver = seam_driver(load_topology(EXAMPLE), "core", "us-1", op)
    result = driver.backup("incr", repo=2)
    ((node, command),) = op.steps
    assert node == "us-1" and command.command() == "backup" and command.timeout == 6 * 3600
    assert command.args == ["--type=incr", "--repo=2", "--log-level-console=info", "backup"]
    assert result.label == "20261125-013000F_20261125-020000I" and result.seconds == 1.5


def test_a_failed_command_on_the_node_is_the_drivers_project_error():
    op = FakeOperator(exit_code=50, stderr="ERROR: [050]: unable to acquire lock on file '/tmp/pgbackrest/core.lock'")
    with pytest.raises(TransientError, match="unable to acquire lock"):
        seam_driver(load_topology(EXAMPLE), "core", "eu-1", op).check()


@pytest.mark.parametrize(
    "args, problem",
    [
        (["archive-push", "/x"], "command 'archive-push' is not one of"),
        ([], "command '(none)'"),
        (["--config=/tmp/other.conf", "backup"], "--config=/tmp/other.conf not allowed"),
        (["--stanza=other", "info"], "--stanza=other not allowed"),
    ],
)
def test_the_node_refuses_other_commands_and_another_config_or_stanza(args, problem):
    with pytest.raises(ConfigurationError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        PgBackRestCommand(args=args).check()


def test_the_step_ships_as_json_and_its_reply_reads_as_a_sentence():
    params = NodeOpParams(
        topology=load_topology(EXAMPLE),
        cluster="core",
        node="eu-1",
        operation="pgbackrest",
        pgbackrest=PgBackRestCommand(args=["--output=json", "info"], timeout=60),
    )
    again = NodeOpParams.model_validate_json(params.model_dump_json())
    assert again.pgbackrest == params.pgbackrest
    reply = NodeOpReply(
        node="eu-1",
        operation="pgbackrest",
        worker_region="eu",
        standing="ok",
        pgbackrest=PgBackRestRun(
            node="eu-1", args=["--output=json", "info"], exit_code=0, stdout="[]", stderr="", seconds=0.4
        ),
    )
    assert reply.sentence() == "pgbackrest of eu-1 on the eu worker: pgbackrest info on eu-1 exited 0 in 0.4 s"


def test_verify_can_ask_for_more_processes_than_the_configuration():
    op = FakeOperator()
    driver = seam_driver(load_topology(EXAMPLE), "core", "eu-1", op)
    assert driver.verify(repo=1).ok and driver.verify(repo=2, process_max=8).ok
    assert [c.args[-2] for _, c in op.steps] == ["--job-retry=0", "--process-max=8"]
    assert all(c.command() == "verify" for _, c in op.steps)
