"""The regional executor's claim of a node step: first claim wins, a run not yet visible is claimed again."""

from __future__ import annotations


def test_a_claim_that_finds_no_run_yet_is_tried_again_and_wins() -> None:
    """The server may deliver a step before its row is visible: a 404 on the claim is not a lost step."""
    import asyncio
    from types import SimpleNamespace
    from uuid import uuid4

    import httpx
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.exceptions import PrefectHTTPStatusError

    from regionops.node import executor

    request = httpx.Request("POST", "http://prefect/api/task_runs/x/set_state")
    calls: list[int] = []

    class Client:
        async def set_task_run_state(self, task_run_id, state, force):
            calls.append(1)
            if len(calls) < 3:
                response = httpx.Response(404, request=request, json={"detail": "Task run not found"})
                raise PrefectHTTPStatusError("not found", request=request, response=response)
            return SimpleNamespace(status=SetStateStatus.ACCEPT)

    assert asyncio.run(executor.claim(Client(), uuid4())) is True  # type: ignore[arg-type]
    assert len(calls) == 3

    class Gone(Client):
        async def set_task_run_state(self, task_run_id, state, force):
            response = httpx.Response(404, request=request, json={"detail": "Task run not found"})
            raise PrefectHTTPStatusError("not found", request=request, response=response)

    old = executor.CLAIM_NOT_FOUND_SECONDS
    executor.CLAIM_NOT_FOUND_SECONDS = 0.2
    try:
        import pytest

        with pytest.raises(PrefectHTTPStatusError):  # a run that never appears: given up, named by Prefect's log
            asyncio.run(executor.claim(Gone(), uuid4()))  # type: ignore[arg-type]
    finally:
        executor.CLAIM_NOT_FOUND_SECONDS = old
