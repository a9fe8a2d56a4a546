"""The transports' pool gate: slots, order (later attempts first), cancellation, time limits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

import aio_client as ac
from aio_client._attempts import AttemptKind
from aio_client._call import _ATTEMPT, _HEDGED, AttemptInfo
from aio_client.transports._gate import PoolGate


class Listener:
    """Stands for a hedged call's strategy in the gates' registry."""

    def __init__(self, deadline: ac.Deadline, hear: Callable[[int, bool], None]) -> None:
        self.call: Any = SimpleNamespace(deadline=deadline)
        self.hear = hear

    def queued(self, number: int, waiting: bool) -> None:
        self.hear(number, waiting)


def taker(gate: PoolGate, log: list[str]) -> Callable[[str], Coroutine[Any, Any, None]]:
    """A request named ``name`` that takes a slot and notes that it got one."""

    async def take(name: str) -> None:
        await gate.acquire(None)
        log.append(name)

    return take


@contextmanager
def attempt(number: int, heard: list[tuple[int, bool]] | None = None) -> Iterator[None]:
    """Run the body as attempt ``number`` of a call (hedges are numbers above 1)."""
    kind = AttemptKind.FIRST if number == 1 else AttemptKind.HEDGE
    deadline = ac.Deadline.from_timeout(60.0)
    token = _ATTEMPT.set(AttemptInfo(number, kind, "http://svc", deadline))
    if heard is not None:
        _HEDGED[id(deadline)] = Listener(deadline, lambda n, waiting: heard.append((n, waiting)))
    try:
        yield
    finally:
        _HEDGED.pop(id(deadline), None)
        _ATTEMPT.reset(token)


async def test_free_slots_are_taken_without_waiting() -> None:
    gate = PoolGate(2)
    with anyio.fail_after(0.001):  # virtual time: any wait would show
        await gate.acquire(None)
        await gate.acquire(None)
    with anyio.move_on_after(1.0) as waited:
        await gate.acquire(None)
    assert waited.cancelled_caught
    gate.release()
    with anyio.fail_after(0.001):
        await gate.acquire(None)


async def test_waiting_hedges_and_retries_go_before_waiting_first_attempts() -> None:
    gate = PoolGate(1)
    await gate.acquire(None)
    order: list[str] = []

    async def take(name: str, number: int) -> None:
        with attempt(number):
            await gate.acquire(None)
        order.append(name)

    async with anyio.create_task_group() as group:
        for name, number in (("first A", 1), ("first B", 1), ("hedge A", 2), ("retry C", 3)):
            group.start_soon(take, name, number)
            await anyio.sleep(0.01)  # queue in this order
        for _ in range(4):
            gate.release()
            await anyio.sleep(0.01)
    # Later attempts first, each kind in arrival order.
    assert order == ["hedge A", "retry C", "first A", "first B"]


async def test_a_newcomer_never_overtakes_a_waiter() -> None:
    """A released slot goes to the waiter even when another request asks in the same turn."""
    gate = PoolGate(1)
    await gate.acquire(None)
    order: list[str] = []
    take = taker(gate, order)

    async with anyio.create_task_group() as group:
        group.start_soon(take, "waiter")
        await anyio.sleep(0.01)
        gate.release()
        group.start_soon(take, "newcomer")
        await anyio.sleep(0.01)
        gate.release()
    assert order == ["waiter", "newcomer"]


async def test_a_cancelled_waiter_gives_its_turn_on() -> None:
    gate = PoolGate(1)
    await gate.acquire(None)
    got: list[str] = []
    take = taker(gate, got)

    async with anyio.create_task_group() as group:
        group.start_soon(take, "first")
        async with anyio.create_task_group() as inner:
            inner.start_soon(take, "cancelled")
            await anyio.sleep(0.01)
            group.start_soon(take, "next")
            await anyio.sleep(0.01)
            inner.cancel_scope.cancel()
        gate.release()
        await anyio.sleep(0.01)
        gate.release()  # skips the cancelled waiter
    assert got == ["first", "next"]


async def test_a_waiter_cancelled_as_it_is_handed_a_slot_passes_it_on() -> None:
    """Handed a slot, then cancelled natively (as a deadline does) before it resumed:
    the slot goes to the next waiter, not lost."""
    gate = PoolGate(1)
    await gate.acquire(None)
    got: list[str] = []
    take = taker(gate, got)

    cancelled = asyncio.create_task(take("cancelled"))
    following = asyncio.create_task(take("next"))
    await asyncio.sleep(0.01)
    gate.release()  # hands the slot to "cancelled"...
    cancelled.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await following
    assert got == ["next"]
    gate.release()
    with anyio.fail_after(0.001):  # and the slot "next" gave back is free
        await gate.acquire(None)


async def test_waiting_longer_than_the_timeout_is_a_deadline_error_not_sent() -> None:
    gate = PoolGate(1)
    await gate.acquire(None)
    heard: list[tuple[int, bool]] = []
    with attempt(2, heard), pytest.raises(ac.DeadlineExceededError) as caught:
        await gate.acquire(0.5)
    assert caught.value.may_have_reached_server is False
    assert "waiting for a connection" in str(caught.value)
    # The strategy heard the wait begin, and no end: the attempt was not sent.
    assert heard == [(2, True)]
    gate.release()
    with anyio.fail_after(0.001):  # the timed-out waiter took nothing
        await gate.acquire(None)


async def test_the_call_hears_when_an_attempt_waits_and_when_it_is_let_in() -> None:
    gate = PoolGate(1)
    heard: list[tuple[int, bool]] = []
    with attempt(1, heard):
        await gate.acquire(None)
    assert heard == []  # no wait: nothing to hear

    async def take() -> None:
        with attempt(2, heard):
            await gate.acquire(None)

    async with anyio.create_task_group() as group:
        group.start_soon(take)
        await anyio.sleep(0.01)
        assert heard == [(2, True)]
        gate.release()
    assert heard == [(2, True), (2, False)]


async def test_a_failing_listener_gives_the_slot_back() -> None:
    gate = PoolGate(1)
    await gate.acquire(None)

    def refuse(number: int, waiting: bool) -> None:
        if not waiting:
            raise RuntimeError("listener bug")

    async def take() -> None:
        with attempt(2):
            info = _ATTEMPT.get()
            assert info is not None
            _HEDGED[id(info.deadline)] = Listener(info.deadline, refuse)
            try:
                with pytest.raises(RuntimeError, match="listener bug"):
                    await gate.acquire(None)
            finally:
                del _HEDGED[id(info.deadline)]

    async with anyio.create_task_group() as group:
        group.start_soon(take)
        await anyio.sleep(0.01)
        gate.release()
    with anyio.fail_after(0.001):
        await gate.acquire(None)


async def test_only_the_attempts_own_call_hears_of_its_wait() -> None:
    """A listener registered for another call hears nothing of this one's wait."""
    gate = PoolGate(1)
    await gate.acquire(None)
    heard: list[tuple[int, bool]] = []

    other = ac.Deadline.from_timeout(60.0)

    async def take() -> None:
        with attempt(1):
            info = _ATTEMPT.get()
            assert info is not None
            # Keyed as the attempt's deadline is, but not it (ids can be reused).
            _HEDGED[id(info.deadline)] = Listener(other, lambda n, w: heard.append((n, w)))
            try:
                await gate.acquire(None)
            finally:
                del _HEDGED[id(info.deadline)]

    async with anyio.create_task_group() as group:
        group.start_soon(take)
        await anyio.sleep(0.01)
        gate.release()
    assert heard == []


async def test_waiters_that_left_do_not_pile_up() -> None:
    """10,000 requests giving up behind a pool held for good leave a bounded queue."""
    gate = PoolGate(1)
    await gate.acquire(None)
    for _ in range(10_000):
        with pytest.raises(ac.DeadlineExceededError):
            await gate.acquire(0.001)
    assert len(gate._firsts) + len(gate._laters) <= 32
    gate.release()
    with anyio.fail_after(0.001):  # and the slot is free again
        await gate.acquire(None)


async def admitted_after(
    stamp: str, wait: float
) -> tuple[PoolGate, ac.Request, ac.Request | Exception]:
    """A request stamped ``stamp`` admitted by a one-slot gate given back after ``wait``
    seconds: the gate, the request, and the request as it goes out (or why it does not)."""
    gate = PoolGate(1)
    await gate.acquire(None)
    request = ac.Request("GET", "http://svc/x", headers=ac.Headers({"X-Request-Timeout": stamp}))
    outcome: list[ac.Request | Exception] = []

    async def take() -> None:
        try:
            outcome.append(await gate.admit(request, None))
        except ac.AioClientError as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as group:
        group.start_soon(take)
        await anyio.sleep(wait)
        gate.release()
    return gate, request, outcome[0]


async def test_an_admitted_request_carries_the_budget_left_after_its_wait() -> None:
    _, _, admitted = await admitted_after("1.000", 0.3)
    assert isinstance(admitted, ac.Request)
    assert 0.69 <= float(admitted.headers["X-Request-Timeout"]) <= 0.7


async def test_a_request_left_without_time_by_its_wait_is_not_sent() -> None:
    """Under a millisecond left after the wait: not sent, and the slot is given back."""
    gate, _, refused = await admitted_after("0.100", 0.2)
    assert isinstance(refused, ac.DeadlineExceededError)
    assert refused.may_have_reached_server is False
    with anyio.fail_after(0.001):
        await gate.acquire(None)


async def test_a_stamp_that_is_not_a_budget_is_left_alone_with_nothing_to_go_by() -> None:
    """No attempt and no ambient deadline, and a stamp that does not parse: sent as it is."""
    _, request, admitted = await admitted_after("soon", 0.1)
    assert admitted is request
