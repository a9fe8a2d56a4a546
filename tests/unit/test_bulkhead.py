"""Bulkhead: the concurrency cap, the waiting room, and permits that always come back."""

from __future__ import annotations

import asyncio
import random

import anyio
import pytest

import aio_client as ac
from aio_client import Bulkhead, BulkheadFullError


class Work:
    """A guarded body that records concurrency and blocks until released."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.started: list[int] = []
        self.release = anyio.Event()

    async def __call__(self, number: int = 0) -> int:
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.started.append(number)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return number


async def test_never_more_than_max_concurrent() -> None:
    """100 callers with a waiting room of 100: at most 3 run at once, all finish."""
    bulkhead = Bulkhead(3, max_waiting=100)
    work = Work()
    guarded = bulkhead(work)
    async with anyio.create_task_group() as tg:
        for number in range(100):
            tg.start_soon(guarded, number)
        await anyio.wait_all_tasks_blocked()
        assert (bulkhead.active, bulkhead.waiting) == (3, 97)
        work.release.set()
    assert work.peak == 3
    assert len(work.started) == 100
    assert (bulkhead.active, bulkhead.waiting, bulkhead.available) == (0, 0, 3)


async def test_full_without_waiting_room_refuses_at_once() -> None:
    """With max_waiting=0, a call finding every permit taken is refused and does not run."""
    bulkhead = Bulkhead(1)
    work = Work()
    async with anyio.create_task_group() as tg:
        tg.start_soon(bulkhead.call, work, 1)
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(BulkheadFullError) as info:
            await bulkhead.call(work, 2)
        work.release.set()
    assert work.started == [1]
    error = info.value
    assert isinstance(error, ac.AioClientError)
    assert isinstance(error, RuntimeError)
    assert error.may_have_reached_server is False
    assert "1/1 running" in str(error)


async def test_waiting_room_is_bounded_and_fifo() -> None:
    """Waiters are served in arrival order; one more than max_waiting is refused."""
    bulkhead = Bulkhead(1, max_waiting=3)
    work = Work()
    async with anyio.create_task_group() as tg:
        for number in range(4):
            tg.start_soon(bulkhead.call, work, number)
            await anyio.wait_all_tasks_blocked()
        with pytest.raises(BulkheadFullError):
            await bulkhead.call(work, 99)
        work.release.set()
    assert work.started == [0, 1, 2, 3]


async def test_newcomers_do_not_overtake_waiters() -> None:
    """A permit freed while others wait goes to the first waiter, not to a newcomer."""
    bulkhead = Bulkhead(1, max_waiting=5)
    order: list[str] = []

    async def named(name: str) -> None:
        order.append(name)

    await bulkhead.acquire()
    async with anyio.create_task_group() as tg:
        tg.start_soon(bulkhead.call, named, "waiter")
        await anyio.wait_all_tasks_blocked()
        bulkhead.release()
        # The waiter has not resumed yet; a newcomer arriving now must still queue.
        await bulkhead.call(named, "newcomer")
    assert order == ["waiter", "newcomer"]


async def test_wait_timeout_refuses_after_waiting() -> None:
    """A waiter gives up after wait_timeout seconds, leaves the queue, and raises."""
    bulkhead = Bulkhead(1, max_waiting=1, wait_timeout=0.5)
    work = Work()
    async with anyio.create_task_group() as tg:
        tg.start_soon(bulkhead.call, work)
        await anyio.wait_all_tasks_blocked()
        start = anyio.current_time()
        with pytest.raises(BulkheadFullError, match="wait_timeout"):
            await bulkhead.call(work)
        assert anyio.current_time() - start == pytest.approx(0.5)
        assert bulkhead.waiting == 0
        work.release.set()
    assert bulkhead.active == 0


async def test_error_in_the_body_releases_the_permit() -> None:
    """A guarded call that raises still gives its permit back (all three forms)."""
    bulkhead = Bulkhead(1)

    @bulkhead
    async def broken() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await broken()
    with pytest.raises(KeyError):
        async with bulkhead:
            raise KeyError("bug")
    with pytest.raises(KeyError):
        await bulkhead.call(broken.__wrapped__)  # type: ignore[attr-defined]
    assert bulkhead.active == 0


async def test_cancellation_storm_leaves_capacity_intact() -> None:
    """Cancelling hundreds of holders and waiters at random moments leaks no permit."""
    bulkhead = Bulkhead(5, max_waiting=1000)
    rng = random.Random(4)
    for _round in range(5):
        async with anyio.create_task_group() as tg:
            for _ in range(300):
                tg.start_soon(_hold_for, bulkhead, rng.uniform(0.0, 0.05))
            await anyio.sleep(rng.uniform(0.0, 0.05))
            tg.cancel_scope.cancel()
        assert (bulkhead.active, bulkhead.waiting) == (0, 0)
    work = Work()
    async with anyio.create_task_group() as tg:
        for number in range(6):
            tg.start_soon(bulkhead.call, work, number)
        await anyio.wait_all_tasks_blocked()
        assert work.running == 5
        work.release.set()


async def _hold_for(bulkhead: Bulkhead, seconds: float) -> None:
    async with bulkhead:
        await anyio.sleep(seconds)


async def test_cancelled_just_after_being_handed_a_permit_passes_it_on() -> None:
    """A waiter cancelled in the same step it is granted a permit hands it to the next one."""
    bulkhead = Bulkhead(1, max_waiting=2)
    ran: list[str] = []

    async def waiter(name: str) -> None:
        async with bulkhead:
            ran.append(name)

    await bulkhead.acquire()
    # Plain asyncio tasks, awaited below: Task.cancel() lands even after the wake-up
    # was scheduled, which is exactly the race under test.
    first = asyncio.create_task(waiter("first"))
    second = asyncio.create_task(waiter("second"))
    await anyio.wait_all_tasks_blocked()
    bulkhead.release()  # hands the permit to "first"...
    first.cancel()  # ...which is cancelled before it can resume
    with pytest.raises(asyncio.CancelledError):
        await first
    await second
    assert ran == ["second"]
    assert (bulkhead.active, bulkhead.waiting) == (0, 0)


async def test_release_without_acquire_is_an_error() -> None:
    """Releasing more permits than were taken is a bug, reported, not absorbed."""
    with pytest.raises(RuntimeError, match="released more"):
        Bulkhead(1).release()


def test_settings_are_validated() -> None:
    """Bad sizes and timeouts raise ConfigError naming the parameter."""
    for args, kwargs, name in [
        ((0,), {}, "max_concurrent"),
        ((1.5,), {}, "max_concurrent"),
        ((1,), {"max_waiting": -1}, "max_waiting"),
        ((1,), {"wait_timeout": 0}, "wait_timeout"),
        ((1,), {"name": 3}, "name"),
    ]:
        with pytest.raises(ac.ConfigError, match=name):
            Bulkhead(*args, **kwargs)  # type: ignore[arg-type]
