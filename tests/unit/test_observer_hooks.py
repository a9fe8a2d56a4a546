"""The observer interface: events for calls, attempts, refusals and breaker changes."""

from __future__ import annotations

import asyncio
import logging

import pytest

import aio_client as ac
from aio_client import CircuitBreaker
from aio_client.metrics import (
    AttemptFinished,
    AttemptStarted,
    BreakerChanged,
    CallFinished,
    CallStarted,
    CallWatcher,
    ExtraAttemptRefused,
    Observer,
)
from aio_client.transports import MemoryTransport

from .helpers import Script, client_for

Event = CallStarted | AttemptStarted | AttemptFinished | ExtraAttemptRefused | CallFinished


class Recorder(Observer, CallWatcher):
    """An observer that writes down every event, and adds a header per attempt."""

    def __init__(self) -> None:
        self.events: list[Event | BreakerChanged] = []

    def call_started(self, event: CallStarted, /) -> CallWatcher | None:
        self.events.append(event)
        return self

    def attempt_started(self, event: AttemptStarted, /) -> list[tuple[str, str]]:
        self.events.append(event)
        return [("TraceParent", f"t-{event.number}")]

    def attempt_finished(self, event: AttemptFinished, /) -> None:
        self.events.append(event)

    def extra_attempt_refused(self, event: ExtraAttemptRefused, /) -> None:
        self.events.append(event)

    def call_finished(self, event: CallFinished, /) -> None:
        self.events.append(event)

    def breaker_changed(self, event: BreakerChanged, /) -> None:
        self.events.append(event)


async def test_observer_hears_a_call_and_each_attempt_in_order() -> None:
    """Call start, each attempt's start and end, call end; attempt headers are added."""
    recorder = Recorder()
    script = Script([ac.Response(503), ac.Response(200)])
    strategy = ac.sequential_strategy(3, ac.constant_delays(0.0))
    async with client_for(script, strategy=strategy, observers=[recorder]) as client:
        await client.request(ac.get("users/{id}", path_params={"id": 1}), timeout=2.0)
    kinds = [type(e).__name__ for e in recorder.events]
    assert kinds == [
        "CallStarted",
        "AttemptStarted",
        "AttemptFinished",
        "AttemptStarted",
        "AttemptFinished",
        "CallFinished",
    ]
    started = recorder.events[0]
    assert isinstance(started, CallStarted)
    assert (started.method, started.route, started.priority) == ("GET", "users/{id}", "normal")
    assert 1.9 < started.timeout <= 2.0
    first = recorder.events[1]
    assert isinstance(first, AttemptStarted)
    assert (first.number, first.kind, first.endpoint, first.url) == (
        1,
        ac.AttemptKind.FIRST,
        "http://svc",
        "http://svc/users/1",
    )
    failed = recorder.events[2]
    assert isinstance(failed, AttemptFinished)
    assert (failed.status, failed.error, failed.kind) == (503, None, ac.AttemptKind.FIRST)
    finished = recorder.events[-1]
    assert isinstance(finished, CallFinished)
    assert (finished.status, finished.error, finished.winner, finished.endpoint) == (
        200,
        None,
        2,
        "http://svc",
    )
    assert [r.endpoint for r in finished.attempts] == ["http://svc", "http://svc"]
    assert finished.duration >= 0
    assert [r.headers["traceparent"] for r in script.requests] == ["t-1", "t-2"]


async def test_call_finished_carries_the_error_the_caller_got() -> None:
    """A call that ran out of time ends with DeadlineExceededError, not a cancellation."""
    recorder = Recorder()
    async with client_for(Script([5.0]), observers=[recorder]) as client:
        with pytest.raises(ac.DeadlineExceededError):
            await client.request(ac.get("a"), timeout=0.05)
    finished = recorder.events[-1]
    assert isinstance(finished, CallFinished)
    assert isinstance(finished.error, ac.DeadlineExceededError)
    assert (finished.status, finished.winner, len(finished.attempts)) == (None, 0, 1)
    attempt = recorder.events[-2]
    assert isinstance(attempt, AttemptFinished)
    assert isinstance(attempt.error, asyncio.CancelledError)


async def test_a_hedged_call_reports_every_attempt_and_the_winner() -> None:
    """The hedge that answered first is the winner; the lost attempt ends cancelled,
    with CancelReason.HEDGE_LOST as the cancellation's message."""
    recorder = Recorder()
    async with client_for(
        Script([1.0, ac.Response(200)]),
        strategy=ac.parallel_strategy(2, 0.01),
        observers=[recorder],
    ) as client:
        resp = await client.request(ac.get("a"))
    assert resp.attempt == 2
    ended = [e for e in recorder.events if isinstance(e, AttemptFinished)]
    assert {(e.number, e.kind, e.status) for e in ended} == {
        (1, ac.AttemptKind.FIRST, None),
        (2, ac.AttemptKind.HEDGE, 200),
    }
    lost = next(e for e in ended if e.number == 1)
    assert isinstance(lost.error, asyncio.CancelledError)
    assert lost.error.args == (ac.CancelReason.HEDGE_LOST,)
    finished = recorder.events[-1]
    assert isinstance(finished, CallFinished)
    assert finished.winner == 2


async def test_observer_hears_refused_hedges_and_retries() -> None:
    """An empty budget's refusals reach observers with the attempt kind and endpoint."""
    recorder = Recorder()
    budget = ac.RetryBudget(ratio=0.0, min_per_second=0.0)
    async with client_for(
        Script([ac.Response(503)]),
        strategy=ac.sequential_strategy(3, ac.constant_delays(0.0)),
        budget=budget,
        observers=[recorder],
    ) as client:
        await client.request(ac.get("a"))
    async with client_for(
        Script([0.5]), strategy=ac.parallel_strategy(2, 0.01), budget=budget, observers=[recorder]
    ) as client:
        await client.request(ac.get("a"))
    refused = [e for e in recorder.events if isinstance(e, ExtraAttemptRefused)]
    assert [(e.kind, e.endpoint) for e in refused] == [
        (ac.AttemptKind.RETRY, "http://svc"),
        (ac.AttemptKind.HEDGE, "http://svc"),
    ]


async def test_observer_hears_breaker_changes() -> None:
    """Observers are told of the client's circuit breakers' state changes."""
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
    changes = [e for e in recorder.events if isinstance(e, BreakerChanged)]
    assert [(e.name, e.old.value, e.new.value) for e in changes] == [
        ("http://svc:80", "closed", "open")
    ]


async def test_a_failing_hook_is_logged_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Observing never changes a call's outcome: a hook that raises is logged."""

    class Broken(Observer, CallWatcher):
        def call_started(self, event: CallStarted, /) -> Broken:
            return self

        def attempt_started(self, event: AttemptStarted, /) -> None:
            raise RuntimeError("attempt_started broke")

        def call_finished(self, event: CallFinished, /) -> None:
            raise RuntimeError("call_finished broke")

    recorder = Recorder()
    with caplog.at_level(logging.ERROR, logger="aio_client"):
        async with client_for(Script([ac.Response(200)]), observers=[Broken(), recorder]) as c:
            resp = await c.request(ac.get("a"))
    assert resp.status == 200
    assert isinstance(recorder.events[-1], CallFinished)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert all("raised; the call is unaffected" in m for m in messages)


async def test_an_observer_may_skip_a_call() -> None:
    """call_started returning None: no further event of that call reaches it."""

    class Skipping(Recorder):
        def call_started(self, event: CallStarted, /) -> None:
            self.events.append(event)
            return

    skipping = Skipping()
    async with client_for(Script([ac.Response(200)]), observers=[skipping]) as client:
        await client.request(ac.get("a"))
    assert [type(e) for e in skipping.events] == [CallStarted]


def test_observers_must_be_observers() -> None:
    """A non-observer is a ConfigError naming the base class."""
    with pytest.raises(ac.ConfigError, match=r"aio_client\.metrics\.Observer"):
        client_for(Script([ac.Response(200)]), observers=[object()])
