"""The node operations' one table: the protocol, the local operator, the flow and the tasks all follow it."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from regionops.node.local import LocalNodeOperator
from regionops.node.messages import NodeOpParams, NodeOpReply
from regionops.node.operations import OPERATIONS
from regionops.node.operator import NodeOperator
from tasks import nodeops


def _arguments(cls: type, method: str) -> list[str]:
    return list(inspect.signature(getattr(cls, method)).parameters)[2:]  # after self and node


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_every_entry_is_a_typed_method_of_the_protocol_and_of_the_local_operator(name):
    step = OPERATIONS[name]
    expected = [a.name for a in step.arguments]
    assert _arguments(NodeOperator, step.method) == expected
    assert _arguments(LocalNodeOperator, step.method) == expected


def test_the_protocol_has_no_method_outside_the_table():
    methods = {m for m in vars(NodeOperator) if not m.startswith("_") and callable(vars(NodeOperator)[m])}
    assert methods - {"perform"} == {op.method for op in OPERATIONS.values()}


class Recorder(NodeOperator):
    """Only perform(): the protocol's typed methods must reach it with the entry's name and arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def perform(self, operation: str, node: str, *args: Any) -> Any:
        self.calls.append((operation, node, *args))
        return True


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_each_typed_method_performs_its_own_entry(name):
    step = OPERATIONS[name]
    values = [f"arg-{a.name}" for a in step.arguments]
    op = Recorder()
    getattr(op, step.method)("eu-1", *values)
    assert op.calls == [(name, "eu-1", *values)]


def test_the_tasks_take_the_operations_arguments_and_names():
    for step in OPERATIONS.values():
        if step.task is None:
            continue
        found = [t for t in vars(nodeops).values() if getattr(t, "name", None) == step.task]
        assert len(found) == 1, step.name
        params = list(inspect.signature(found[0].fn).parameters)
        assert params == ["topology", "cluster", "node", *(a.name for a in step.arguments)]


def test_an_unknown_operation_is_refused_before_it_ships():
    with pytest.raises(ValueError, match="unknown node operation 'format-disk'"):
        NodeOpParams.model_validate(
            {"topology": {}, "cluster": "core", "node": "eu-1", "operation": "format-disk"}, context=None
        )


def test_a_step_without_its_required_argument_is_refused_naming_it():
    class Params:
        peer = None

    with pytest.raises(ValueError, match="rewind of eu-2 needs source"):
        OPERATIONS["rewind"].received("eu-2", Params())


def test_every_reply_field_exists():
    for step in OPERATIONS.values():
        assert step.reply in NodeOpReply.model_fields, step.name
