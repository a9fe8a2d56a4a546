"""The shared deadline timer: every call's deadline, one loop timer, asyncio's cancel protocol."""

from __future__ import annotations

import asyncio

import anyio
import pytest

import aio_client as ac
from aio_client._timer import DeadlineTimer
from aio_client.transports import MemoryTransport, backend_timeout

from .helpers import client_for

OK = ac.Response(200, content=b"ok")


async def hang(request: ac.Request) -> ac.Response:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def test_concurrent_calls_each_expire_at_their_own_deadline() -> None:
    """Deadlines registered out of order (a nearer one after a farther one) all fire on time."""
    timeouts = [5.0, 1.0, 3.0, 0.5, 2.0, 0.5]
    ended: dict[int, float] = {}

    async with client_for(hang) as client:
        start = anyio.current_time()

        async def one(index: int) -> None:
            with pytest.raises(ac.DeadlineExceededError):
                await client.request(ac.get("a"), timeout=timeouts[index])
            ended[index] = anyio.current_time() - start

        async with anyio.create_task_group() as group:
            for index in range(len(timeouts)):
                group.start_soon(one, index)
    for index, timeout in enumerate(timeouts):
        assert ended[index] == pytest.approx(timeout, abs=0.01)


async def test_no_cancellation_is_left_behind_after_a_deadline() -> None:
    """After a deadline error the task's cancel count is back to zero and it runs on."""
    task = asyncio.current_task()
    assert task is not None
    async with client_for(hang) as client:
        with pytest.raises(ac.DeadlineExceededError):
            await client.request(ac.get("a"), timeout=0.2)
        assert task.cancelling() == 0
        await anyio.sleep(0.1)  # would raise if a cancellation were pending
        with pytest.raises(ac.DeadlineExceededError):
            await client.request(ac.get("a"), timeout=0.2)
    assert task.cancelling() == 0


async def test_a_handler_that_swallows_the_deadline_leaves_no_cancellation() -> None:
    """Like asyncio.timeout: a body that ignores the cancellation returns; nothing stays pending."""

    async def stubborn(request: ac.Request) -> ac.Response:
        try:
            await anyio.sleep(10)
        except asyncio.CancelledError:
            return ac.Response(200, content=b"late")
        raise AssertionError("unreachable")

    task = asyncio.current_task()
    assert task is not None
    async with client_for(stubborn) as client:
        response = await client.request(ac.get("a"), timeout=0.2)
    assert response.content == b"late"
    assert task.cancelling() == 0
    await anyio.sleep(0.1)


async def test_a_cancellation_from_outside_at_the_deadline_stays_a_cancellation() -> None:
    """When the caller is cancelled as the deadline passes, the caller's cancellation wins."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    async with client_for(hang) as client:
        loop.call_at(loop.time() + 0.2, task.cancel)
        with pytest.raises(asyncio.CancelledError):
            await client.request(ac.get("a"), timeout=0.2)
        assert task.uncancel() == 0  # the one cancellation was ours to withdraw


async def test_an_outer_timeout_at_the_same_time_is_reported_as_its_own() -> None:
    """asyncio.timeout around a call with the same deadline raises its TimeoutError, not ours."""
    async with client_for(hang) as client:
        with pytest.raises(TimeoutError) as info:
            async with asyncio.timeout(0.2):
                await client.request(ac.get("a"), timeout=0.2)
    assert type(info.value) is TimeoutError


def _timer_here() -> tuple[DeadlineTimer, asyncio.AbstractEventLoop, asyncio.Task[object]]:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    return DeadlineTimer(loop), loop, task


async def test_finished_calls_do_not_pile_up() -> None:
    """Thousands of finished calls beside one long pending one keep the timer small."""
    timer, loop, task = _timer_here()
    long_one = timer.start(loop.time() + 60.0, task)
    for step in range(10_000):
        entry = timer.start(loop.time() + 10.0 + step * 1e-3, task)
        assert timer.finish(entry) is False
    assert len(timer._heap) <= 2 + 256 + 1
    assert timer.finish(long_one) is False
    assert timer._heap == []
    timer.close()


async def test_finish_is_idempotent_and_close_disarms() -> None:
    """finish() twice is harmless; after close() nothing fires."""
    timer, loop, task = _timer_here()
    entry = timer.start(loop.time() + 0.1, task)
    assert timer.finish(entry) is False
    assert timer.finish(entry) is False
    other = timer.start(loop.time() + 0.1, task)
    timer.close()
    await anyio.sleep(0.5)  # a timer still armed would cancel this sleep
    assert timer.finish(other) is False


def test_a_client_serves_one_loop_after_another() -> None:
    """A client used under two event loops in turn enforces deadlines in both."""
    client = client_for(hang)

    async def expire() -> None:
        with pytest.raises(ac.DeadlineExceededError):
            await client.request(ac.get("a"), timeout=0.05)

    asyncio.run(expire())
    asyncio.run(expire())
    asyncio.run(client.aclose())


async def test_transports_arm_no_timer_of_their_own_for_what_the_client_enforces() -> None:
    """backend_timeout(): None inside a plain attempt; the nearer budget when a stage
    tightened the ambient deadline; the ambient budget for a transport used alone."""
    seen: list[float | None] = []

    async def handler(request: ac.Request) -> ac.Response:
        seen.append(backend_timeout())
        return OK

    async def tighten(request: ac.Request, call_next: ac.Handler) -> ac.Response:
        with ac.ambient(timeout=0.25):
            return await call_next(request)

    async with client_for(handler) as client:
        await client.request(ac.get("a"), timeout=2.0)
    async with client_for(handler, attempt_stages=[tighten]) as client:
        await client.request(ac.get("a"), timeout=2.0)
    split = ac.sequential_strategy(attempts=2, attempt_timeout=ac.split_deadline_between_attempts)
    async with client_for(handler, strategy=split) as client:
        await client.request(ac.get("a"), timeout=2.0)
    transport = MemoryTransport(handler)
    with ac.ambient(timeout=0.5):
        await transport.send(ac.Request(method="GET", url="http://svc/a"))
    await transport.send(ac.Request(method="GET", url="http://svc/a"))
    assert seen == [None, pytest.approx(0.25), None, pytest.approx(0.5), None]


async def test_a_call_stage_that_only_tightens_the_ambient_deadline_is_enforced() -> None:
    """ambient() in a call stage cancels nothing by itself; the client enforces it."""

    async def tighten(request: ac.Request, call_next: ac.Handler) -> ac.Response:
        with ac.ambient(timeout=0.3):
            return await call_next(request)

    async with client_for(hang, stages=[tighten]) as client:
        start = anyio.current_time()
        with pytest.raises(ac.DeadlineExceededError) as info:
            await client.request(ac.get("a"), timeout=5.0)
    assert anyio.current_time() - start == pytest.approx(0.3, abs=0.01)
    assert [a.error for a in info.value.attempts] == ["CancelledError"]


async def test_a_deadline_withdrawn_inside_the_call_is_delivered_again_at_once() -> None:
    """Level-triggered: a body that swallows the cancellation with uncancel() is cancelled
    again within a few milliseconds, and the caller gets DeadlineExceededError."""
    swallowed = 0

    async def swallows_once(request: ac.Request) -> ac.Response:
        nonlocal swallowed
        try:
            await anyio.sleep(10)
        except asyncio.CancelledError:
            swallowed += 1
            task = asyncio.current_task()
            assert task is not None
            task.uncancel()  # what a cancel scope does when it takes the cancellation for its own
        await anyio.sleep(10)
        return ac.Response(200, content=b"too late")

    task = asyncio.current_task()
    assert task is not None
    async with client_for(swallows_once) as client:
        start = anyio.current_time()
        with pytest.raises(ac.DeadlineExceededError):
            await client.request(ac.get("a"), timeout=0.2)
        took = anyio.current_time() - start
    assert swallowed == 1
    assert took == pytest.approx(0.2, abs=0.01)
    assert task.cancelling() == 0


async def test_a_deadline_dropped_without_uncancel_is_delivered_again_after_a_grace() -> None:
    """A body that drops the cancellation and carries on is cancelled again within 0.1 s."""
    dropped = 0

    async def drops(request: ac.Request) -> ac.Response:
        nonlocal dropped
        while True:
            try:
                await anyio.sleep(10)
            except asyncio.CancelledError:
                dropped += 1
                if dropped == 3:
                    raise

    task = asyncio.current_task()
    assert task is not None
    async with client_for(drops) as client:
        start = anyio.current_time()
        with pytest.raises(ac.DeadlineExceededError):
            await client.request(ac.get("a"), timeout=0.2)
        took = anyio.current_time() - start
    assert dropped == 3
    assert took == pytest.approx(0.4, abs=0.02)  # the deadline, then two graces
    assert task.cancelling() == 0


async def test_timer_callbacks_run_when_due_unless_finished_first() -> None:
    """call_at() runs a callback at its time, in order; a finished one never runs."""
    timer, loop, _ = _timer_here()
    ran: list[tuple[str, float]] = []
    start = loop.time()

    def note(name: str) -> None:
        ran.append((name, round(loop.time() - start, 3)))

    timer.call_at(start + 0.3, lambda: note("late"))
    early = timer.call_at(start + 0.1, lambda: note("withdrawn"))
    timer.call_at(start + 0.2, lambda: note("middle"))
    timer.finish(early)
    await anyio.sleep(0.5)
    assert ran == [("middle", 0.2), ("late", 0.3)]
    timer.close()


async def test_a_timer_callback_that_raises_goes_to_the_loop_and_spares_the_others() -> None:
    """An exception in one callback is reported to the loop's handler; the next still runs."""
    timer, loop, _ = _timer_here()
    reported: list[BaseException] = []
    loop.set_exception_handler(lambda _, context: reported.append(context["exception"]))
    ran: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    timer.call_at(loop.time() + 0.1, boom)
    timer.call_at(loop.time() + 0.1, lambda: ran.append("next"))
    await anyio.sleep(0.2)
    loop.set_exception_handler(None)
    assert ran == ["next"]
    assert [type(exc) for exc in reported] == [RuntimeError]
    timer.close()
