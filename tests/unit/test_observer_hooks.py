"""The observer hooks: stages around calls and attempts, refusals, breaker changes."""

from __future__ import annotations

import pytest

import aio_client as ac
from aio_client.policies import CircuitBreaker, CircuitState
from aio_client.transports import MemoryTransport

from .helpers import Script, client_for


class Recorder:
    """An observer that writes down everything it sees."""

    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    @property
    def call_stage(self) -> ac.Stage:
        async def stage(request: ac.Request, call_next: ac.Handler) -> ac.Response:
            self.events.append(("call", request.route))
            resp = await call_next(request)
            self.events.append(("call-done", resp.status, resp.attempt))
            return resp

        return stage

    @property
    def attempt_stage(self) -> ac.Stage:
        async def stage(request: ac.Request, call_next: ac.Handler) -> ac.Response:
            info = ac.current_attempt()
            assert info is not None
            self.events.append(("attempt", info.number, info.kind.value, info.endpoint))
            headers = request.headers.replace({"traceparent": f"t-{info.number}"})
            return await call_next(
                ac.Request(request.method, request.url, headers, request.content, request.route)
            )

        return stage

    def extra_attempt_refused(self, request: ac.Request, kind: ac.AttemptKind) -> None:
        self.events.append(("refused", kind.value))

    def breaker_state_changed(
        self, breaker: CircuitBreaker, old: CircuitState, new: CircuitState
    ) -> None:
        self.events.append(("breaker", old.value, new.value))


async def test_observer_sees_call_and_each_attempt() -> None:
    """The call stage runs once, the attempt stage per attempt, and may add headers."""
    recorder = Recorder()
    script = Script([ac.Response(503), ac.Response(200)])
    strategy = ac.sequential_strategy(3, ac.constant_delays(0.0))
    async with client_for(script, strategy=strategy, observers=[recorder]) as client:
        await client.request(ac.get("users/{id}", path_params={"id": 1}))
    assert recorder.events == [
        ("call", "users/{id}"),
        ("attempt", 1, "first", "http://svc"),
        ("attempt", 2, "retry", "http://svc"),
        ("call-done", 200, 2),
    ]
    assert [r.headers["traceparent"] for r in script.requests] == ["t-1", "t-2"]
    assert ac.current_attempt() is None


async def test_observer_hears_refused_hedges_and_retries() -> None:
    """An empty budget's refusals reach observers with the attempt kind."""
    recorder = Recorder()
    budget = ac.RetryBudget(ratio=0.0, min_per_second=0.0)
    async with client_for(
        Script([ac.Response(503)]),
        strategy=ac.sequential_strategy(3, ac.constant_delays(0.0)),
        budget=budget,
        observers=[recorder],
    ) as client:
        await client.request(ac.get("a"))
        await client.request(ac.get("a"), strategy=ac.parallel_strategy(2, 0.01))
    assert [e for e in recorder.events if e[0] == "refused"] == [
        ("refused", "retry"),
        ("refused", "retry"),
    ]
    async with client_for(
        Script([0.5]), strategy=ac.parallel_strategy(2, 0.01), budget=budget, observers=[recorder]
    ) as client:
        await client.request(ac.get("a"))
    assert recorder.events[-2] == ("refused", "hedge")


async def test_observer_hears_breaker_changes() -> None:
    """Observers are registered on the client's circuit breaker."""
    recorder = Recorder()
    breaker = CircuitBreaker(failure_threshold=1, break_duration=5.0)
    async with ac.Client(
        MemoryTransport(Script([ac.Response(500)])),
        "http://svc",
        strategy=ac.single_attempt_strategy(),
        circuit_breaker=breaker,
        observers=[recorder],
    ) as client:
        await client.request(ac.get("a"))
    assert ("breaker", "closed", "open") in recorder.events


def test_observers_must_implement_the_protocol() -> None:
    """A non-observer is a ConfigError."""
    with pytest.raises(ac.ConfigError, match="observers"):
        client_for(Script([ac.Response(200)]), observers=[object()])
