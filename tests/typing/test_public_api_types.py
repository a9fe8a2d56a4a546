"""The public API as users write it, checked by ``mypy --strict`` and run by pytest.

Each ``assert_type`` pins what a type checker infers for an everyday expression;
the code also runs (over ``MemoryTransport``), so the types describe real values.
"""

from __future__ import annotations

import asyncio
from typing import assert_type

import pytest

import aio_client
from aio_client import (
    AttemptRecord,
    Bulkhead,
    CircuitBreaker,
    Client,
    Deadline,
    Fallback,
    Priority,
    RateLimiter,
    Request,
    Response,
    Strategy,
    Timeout,
)
from aio_client.compat.aiocircuitbreaker import circuit
from aio_client.metrics import CallFinished, CallStarted, CallWatcher, Observer
from aio_client.policies import as_stage
from aio_client.testing import ChaosTransport, Delayed, ScriptedTransport, Step
from aio_client.transports import MemoryTransport


async def _ok(request: Request) -> Response:
    return Response(200, headers={"content-type": "application/json"}, content=b'{"n": 1}')


async def test_requests_and_responses_type_as_written() -> None:
    """Builders take plain dicts for query and headers; responses type their fields."""
    request = aio_client.get(
        "users/{id}",
        path_params={"id": 7},
        query={"q": "a", "n": 2, "tags": ["x", "y"]},
        headers={"Accept": "application/json"},
    )
    assert_type(request, Request)
    pairs = aio_client.get("search", query=[("q", "a"), ("q", "b")])
    assert_type(pairs, Request)
    async with Client(MemoryTransport(_ok), "http://users") as client:
        response = await client.request(request, timeout=1.0, priority="high")
        assert_type(response, Response)
        assert_type(response.status, int)
        assert_type(response.json(), aio_client._models.JSON)
        again = await client.get("users/{id}", path_params={"id": 1}, timeout=0.5)
        assert_type(again, Response)
        async with client.post("users", json={"name": "x"}, idempotent=True) as created:
            assert_type(created, Response)
    assert response.headers["content-type"] == "application/json"


async def test_strategies_and_deadlines_type_as_written() -> None:
    """Strategies are Strategy; deadlines and ambient blocks type their values."""
    hedged = aio_client.parallel_strategy(2, aio_client.adaptive_delays())
    assert_type(hedged, Strategy)
    retried = aio_client.sequential_strategy(3, aio_client.exponential_delays(0.01))
    assert_type(retried, Strategy)
    with aio_client.ambient(timeout=1.0, priority=Priority.LOW) as inherited:
        assert_type(inherited, Deadline | None)
        assert aio_client.current_priority() is Priority.LOW
    async with Client(MemoryTransport(_ok), "http://users", strategy=hedged) as client:
        response = await client.get("a", deadline=Deadline.from_timeout(1.0))
    records = response.attempt, aio_client.AttemptKind.FIRST
    assert records[0] == 1


async def test_errors_carry_typed_attempts() -> None:
    """An error's attempts are AttemptRecords; refusals have retry_after."""

    async def slow(request: Request) -> Response:
        await asyncio.sleep(1.0)
        return Response(200)

    async with Client(MemoryTransport(slow), "http://users") as client:
        with pytest.raises(aio_client.DeadlineExceededError) as info:
            await client.get("a", timeout=0.05)
    assert_type(info.value.attempts, tuple[AttemptRecord, ...])
    assert_type(info.value.may_have_reached_server, bool)
    assert info.value.attempts[0].endpoint == "http://users"
    refusal = aio_client.RateLimitedError("limited", retry_after=0.5)
    assert_type(refusal.retry_after, float)


async def test_policies_keep_the_decorated_signature() -> None:
    """Policies as decorators keep the function's parameters and result type."""
    breaker = CircuitBreaker(failure_threshold=3, break_duration=1.0)

    @Fallback(0)
    @Timeout(1.0)
    @breaker
    @RateLimiter("100/second")
    @Bulkhead(4)
    async def count(word: str) -> int:
        return len(word)

    assert_type(await count("four"), int)

    @circuit(failure_threshold=2, recovery_timeout=1)
    async def legacy(word: str) -> str:
        return word

    assert_type(await legacy("x"), str)
    stage = as_stage(Timeout(1.0))
    assert_type(stage, aio_client.Stage)


async def test_an_observer_types_its_hooks() -> None:
    """A user's observer subclasses Observer and CallWatcher and gets typed events."""

    class Durations(Observer, CallWatcher):
        def __init__(self) -> None:
            self.seen: list[float] = []

        def call_started(self, event: CallStarted, /) -> CallWatcher:
            assert_type(event.timeout, float)
            return self

        def call_finished(self, event: CallFinished, /) -> None:
            assert_type(event.status, int | None)
            self.seen.append(event.duration)

    durations = Durations()
    async with Client(MemoryTransport(_ok), "http://users", observers=[durations]) as client:
        await client.get("a")
    assert len(durations.seen) == 1


async def test_the_testing_kit_types_as_written() -> None:
    """The testing kit's transports are Transports; what they record and count types."""
    steps: list[Step] = [Response(503), Delayed(0.01, Response(200))]
    scripted = ScriptedTransport(*steps, routes={"GET users/{id}": [aio_client.ConnectError("x")]})
    chaos = ChaosTransport(scripted, seed=1, slow_rate=0.5, slow_min=0.0, slow_max=0.01)
    async with Client(chaos, "http://svc", strategy=aio_client.sequential_strategy(2)) as client:
        resp = await client.get("items")
    assert_type(resp, Response)
    assert_type(scripted.requests, list[Request])
    assert_type(scripted.sent("items"), list[Request])
    assert_type(chaos.injected["slow"], int)
    assert resp.status == 200


async def test_fan_out_types_as_written() -> None:
    """A fan-out's outcomes type as ``Response | AioClientError``, in order or as they end."""
    async with Client(MemoryTransport(_ok), "http://users") as client:
        outcomes = await client.fan_out([aio_client.get("a"), aio_client.get("b")], timeout=1.0)
        assert_type(outcomes, list[Response | aio_client.AioClientError])
        across = await aio_client.fan_out(
            [(client, aio_client.get("c"))], min_success=1, hedge_stragglers=False
        )
        assert_type(across, list[Response | aio_client.AioClientError])
        async with client.fan_out(aio_client.get(p) for p in "de") as done:
            async for index, outcome in done:
                assert_type(index, int)
                assert_type(outcome, Response | aio_client.AioClientError)
    assert [o.status for o in outcomes if isinstance(o, Response)] == [200, 200]
