"""Deadline, priority and attempt number as a real server receives them."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import anyio
import pytest

import aio_client as ac
from aio_client.transports import AiohttpTransport, HttpxTransport, Transport

from .servers import AppServer, app_server

TIMEOUT_FORMAT = re.compile(r"\d+\.\d{3}")
FAST_RETRIES = ac.sequential_strategy(attempts=3, delays=ac.constant_delays(0.0))


@pytest.fixture(params=["aiohttp", "httpx"])
async def client(
    request: pytest.FixtureRequest, anyio_backend: str
) -> AsyncIterator[tuple[ac.Client, AppServer]]:
    """A client over each transport, and the recording server it talks to."""
    transport: Transport = AiohttpTransport() if request.param == "aiohttp" else HttpxTransport()
    async with app_server() as server, ac.Client(transport, server.url) as made:
        yield made, server


def _budget(seen: str | None) -> float:
    assert seen is not None
    assert TIMEOUT_FORMAT.fullmatch(seen), f"not decimal seconds with 3 decimals: {seen!r}"
    return float(seen)


async def test_first_attempt_carries_the_call_timeout(
    client: tuple[ac.Client, AppServer],
) -> None:
    """X-Request-Timeout of attempt 1 is the call's timeout less the time to send it."""
    api, server = client
    await api.request(ac.get("record"), timeout=2.0)
    (seen,) = server.seen
    assert 1.9 < _budget(seen.timeout) <= 2.0
    assert seen.attempt == "1"


async def test_priority_is_sent(client: tuple[ac.Client, AppServer]) -> None:
    """The call's priority, else the ambient one, else the client's, travels as a header."""
    api, server = client
    await api.request(ac.get("record"))
    await api.request(ac.get("record"), priority="high")
    with ac.ambient(priority=ac.Priority.LOW):
        await api.request(ac.get("record"))
        await api.request(ac.get("record"), priority=ac.Priority.HIGH)
    assert [seen.priority for seen in server.seen] == ["normal", "high", "low", "high"]


async def test_retries_count_attempts_and_shrink_the_budget(
    client: tuple[ac.Client, AppServer],
) -> None:
    """Attempts are numbered 1, 2, 3 and each leaves with what is left of one deadline."""
    api, server = client
    started = anyio.current_time()
    # 503 twice, each after 20 ms, so every retry has measurably less budget.
    response = await api.request(
        ac.get("record", query={"fail": 2, "delay": 0.02}),
        timeout=2.0,
        priority="low",
        strategy=FAST_RETRIES,
    )
    assert (response.status, response.attempt) == (200, 3)
    assert [seen.attempt for seen in server.seen] == ["1", "2", "3"]
    assert {seen.priority for seen in server.seen} == {"low"}
    budgets = [_budget(seen.timeout) for seen in server.seen]
    # One deadline for the whole call: attempt n+1 left at least the server's
    # 20 ms after attempt n, so it announces at least that much less.
    assert budgets[0] - budgets[1] >= 0.019
    assert budgets[1] - budgets[2] >= 0.019
    for seen, budget in zip(server.seen, budgets, strict=True):
        # Sent before it arrived, so never less than what was left on arrival.
        assert budget >= 2.0 - (seen.arrived - started) - 0.001


async def test_split_budget_sends_the_attempts_share(
    client: tuple[ac.Client, AppServer],
) -> None:
    """With split_deadline_between_attempts, attempt 1 announces a third of the budget."""
    api, server = client
    split = ac.sequential_strategy(
        attempts=3,
        delays=ac.constant_delays(0.0),
        attempt_timeout=ac.split_deadline_between_attempts,
    )
    await api.request(ac.get("record"), timeout=3.0, strategy=split)
    assert 0.9 < _budget(server.seen[0].timeout) <= 1.0


async def test_ambient_deadline_caps_a_longer_timeout(
    client: tuple[ac.Client, AppServer],
) -> None:
    """Inside ambient(timeout=0.5), a call asking for 10 s announces at most 0.5 s."""
    api, server = client
    with ac.ambient(timeout=0.5):
        await api.request(ac.get("record"), timeout=10.0)
    assert 0.4 < _budget(server.seen[0].timeout) <= 0.5
