"""The parallel (hedged) strategy and adaptive delays, on virtual time."""

from __future__ import annotations

import asyncio
import contextvars
import time

import anyio
import pytest

import aio_client as ac
from aio_client.policies import as_stage
from aio_client.strategies._adaptive import AdaptiveDelays
from aio_client.transports import MemoryTransport

from .helpers import Script, client_for

OK = ac.Response(200, content=b"ok")


class Timed:
    """A handler whose n-th request sleeps ``latencies[n]`` and then answers.

    Records start times and which attempts were cancelled.
    """

    def __init__(
        self, latencies: list[float], answers: list[ac.Response | Exception] | None = None
    ):
        self.latencies = latencies
        self.answers = answers or []
        self.starts: list[float] = []
        self.urls: list[str] = []
        self.cancelled: list[int] = []

    async def __call__(self, request: ac.Request) -> ac.Response:
        index = len(self.starts)
        self.starts.append(round(anyio.current_time(), 4))
        self.urls.append(request.url)
        try:
            await anyio.sleep(self.latencies[min(index, len(self.latencies) - 1)])
        except BaseException:
            self.cancelled.append(index + 1)
            raise
        if index < len(self.answers):
            answer = self.answers[index]
            if isinstance(answer, Exception):
                raise answer
            return answer
        return ac.Response(200, content=str(index + 1).encode())


async def test_hedges_start_after_each_delay() -> None:
    """With every attempt slow, attempts start at 0, d and 2d."""
    server = Timed([1.0])
    async with client_for(server, strategy=ac.parallel_strategy(3, 0.1)) as client:
        resp = await client.request(ac.get("a"))
    assert server.starts == [0.0, 0.1, 0.2]
    assert resp.attempt == 1
    assert sorted(server.cancelled) == [2, 3]


async def test_later_attempt_wins_and_loser_is_cancelled() -> None:
    """A fast hedge wins; the slow first attempt is cancelled and recorded."""
    server = Timed([5.0, 0.02])
    async with client_for(server, strategy=ac.parallel_strategy(3, 0.1)) as client:
        start = anyio.current_time()
        resp = await client.request(ac.get("a"))
        took = anyio.current_time() - start
    assert (resp.attempt, resp.content) == (2, b"2")
    assert took == pytest.approx(0.12, abs=0.005)
    assert server.cancelled == [1]
    assert resp.url == "http://svc/a"


async def test_per_attempt_delays() -> None:
    """A sequence gives each hedge its own delay."""
    server = Timed([1.0])
    async with client_for(server, strategy=ac.parallel_strategy(3, [0.05, 0.2])) as client:
        await client.request(ac.get("a"))
    assert server.starts == [0.0, 0.05, 0.25]


async def test_retryable_failure_hedges_at_once() -> None:
    """A retryable failure starts the next attempt immediately, not after the delay."""
    server = Timed([0.01, 0.01], [ac.Response(503)])
    async with client_for(server, strategy=ac.parallel_strategy(3, 0.5)) as client:
        resp = await client.request(ac.get("a"))
    assert server.starts == [0.0, 0.01]
    assert (resp.status, resp.attempt) == (200, 2)


async def test_final_error_response_wins_at_once() -> None:
    """A final (non-retryable) response ends the call and cancels the others."""
    server = Timed([1.0, 0.01], [OK, ac.Response(404)])
    async with client_for(server, strategy=ac.parallel_strategy(3, 0.1)) as client:
        resp = await client.request(ac.get("a"))
    assert (resp.status, resp.attempt) == (404, 2)
    assert server.cancelled == [1]


async def test_all_failing_returns_last_response() -> None:
    """When every attempt fails retryably, the last response is returned."""
    server = Timed([0.01], [ac.Response(503)] * 3)
    async with client_for(server, strategy=ac.parallel_strategy(3, 0.5)) as client:
        resp = await client.request(ac.get("a"))
    assert (resp.status, len(server.starts)) == (503, 3)


async def test_all_failing_raises_with_history() -> None:
    """When every attempt fails with a transport error, it is raised with every attempt."""
    server = Timed([0.01], [ac.NetworkError("reset")] * 3)
    async with client_for(server, strategy=ac.parallel_strategy(3, 0.5)) as client:
        with pytest.raises(ac.NetworkError) as info:
            await client.request(ac.get("a"))
    assert [a.kind for a in info.value.attempts] == ["first", "retry", "retry"]


async def test_empty_budget_sends_no_hedge() -> None:
    """With the budget spent, no hedge goes out and the refusal is counted."""
    budget = ac.RetryBudget(ratio=0.0, min_per_second=0.0)
    server = Timed([0.3])
    async with client_for(server, strategy=ac.parallel_strategy(3, 0.1), budget=budget) as client:
        resp = await client.request(ac.get("a"))
    assert server.starts == [0.0]
    assert resp.attempt == 1
    assert budget.exhausted_count == 1


async def test_deadline_cuts_off_hedging() -> None:
    """Attempts share the call's deadline; when it passes, all are cancelled."""
    server = Timed([10.0])
    async with client_for(server, strategy=ac.parallel_strategy(5, 0.1)) as client:
        with pytest.raises(ac.DeadlineExceededError) as info:
            await client.request(ac.get("a"), timeout=0.25)
    assert server.starts == [0.0, 0.1, 0.2]
    assert sorted(server.cancelled) == [1, 2, 3]
    assert len(info.value.attempts) == 3


async def test_no_hedge_when_too_little_budget_left() -> None:
    """No new attempt starts when less than the low-timeout threshold remains."""
    server = Timed([10.0])
    strategy = ac.parallel_strategy(3, 0.098)
    async with client_for(server, strategy=strategy, low_timeout=0.005) as client:
        with pytest.raises(ac.DeadlineExceededError):
            await client.request(ac.get("a"), timeout=0.1)
    assert server.starts == [0.0]


async def test_post_is_not_hedged_unless_opted_in() -> None:
    """Non-idempotent requests get one attempt; idempotent=True hedges them."""
    server = Timed([0.3])
    async with client_for(server, strategy=ac.parallel_strategy(3, 0.1)) as client:
        await client.request(ac.post("a"))
        assert server.starts == [0.0]
        await client.request(ac.post("a"), idempotent=True)
    assert len(server.starts) == 4


async def test_hedge_goes_to_another_endpoint() -> None:
    """With several endpoints, each in-flight attempt uses a different one."""
    server = Timed([1.0])
    transport = MemoryTransport(server)
    endpoints = ["http://a", "http://b", "http://c"]
    async with ac.Client(
        transport, lambda: endpoints, strategy=ac.parallel_strategy(3, 0.1)
    ) as client:
        await client.request(ac.get("x"))
    assert sorted(server.urls) == ["http://a/x", "http://b/x", "http://c/x"]


async def test_bug_in_a_transport_is_not_wrapped_in_a_group() -> None:
    """An unexpected exception in an attempt reaches the caller as itself."""

    async def broken(request: ac.Request) -> ac.Response:
        raise KeyError("bug")

    async with client_for(broken, strategy=ac.parallel_strategy(3, 0.1)) as client:
        with pytest.raises(KeyError, match="bug"):
            await client.request(ac.get("a"))


async def test_many_hedged_calls_leave_no_tasks() -> None:
    """After many hedged calls, no task is left behind."""
    server = Script([0.05])
    before = len(asyncio.all_tasks())

    async def call(client: ac.Client) -> None:
        await client.request(ac.get("a"))

    async with (
        client_for(
            server,
            strategy=ac.parallel_strategy(3, 0.01),
            budget=ac.RetryBudget(ratio=10.0),
        ) as client,
        anyio.create_task_group() as tg,
    ):
        for _ in range(200):
            tg.start_soon(call, client)
    assert len(asyncio.all_tasks()) == before
    assert len(server.requests) == 600


def test_bad_parallel_settings_rejected() -> None:
    """Bad attempts and delays values are ConfigErrors."""
    with pytest.raises(ac.ConfigError, match="attempts"):
        ac.parallel_strategy(0)
    with pytest.raises(ac.ConfigError, match="delays"):
        ac.parallel_strategy(3, "soon")  # type: ignore[arg-type]
    with pytest.raises(ac.ConfigError, match="empty"):
        ac.parallel_strategy(3, [])
    with pytest.raises(ac.ConfigError, match="delays"):
        ac.parallel_strategy(3, -0.1)
    with pytest.raises(ac.ConfigError, match="percentile"):
        ac.adaptive_delays(1.5)
    with pytest.raises(ac.ConfigError, match="max_delay"):
        ac.adaptive_delays(min_delay=1.0, max_delay=0.5)
    with pytest.raises(ac.ConfigError, match="min_samples"):
        ac.adaptive_delays(min_samples=0)
    with pytest.raises(ac.ConfigError, match="clock"):
        ac.adaptive_delays(clock=5.0)  # type: ignore[arg-type]


class Clock:
    """A hand-moved clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


KEY = ("http://svc", "GET", "a")


def test_adaptive_cold_uses_max_delay() -> None:
    """Until min_samples successes are seen, the delay is max_delay."""
    delays = ac.adaptive_delays(min_delay=0.001, max_delay=0.5, min_samples=10, clock=Clock())
    for _ in range(9):
        delays.record(KEY, 0.01)
    assert delays.delay(KEY) == 0.5
    delays.record(KEY, 0.01)
    assert delays.delay(KEY) == pytest.approx(0.01, rel=0.1)


def test_adaptive_percentile_and_clamping() -> None:
    """The delay is the chosen percentile of recent latencies, clamped to [min, max]."""
    clock = Clock()
    delays = ac.adaptive_delays(0.9, min_delay=0.005, max_delay=0.2, min_samples=10, clock=clock)
    for i in range(100):
        delays.record(KEY, 0.001 * (i + 1))  # 1 ms .. 100 ms
    assert delays.delay(KEY) == pytest.approx(0.090, rel=0.1)
    fast = ("http://svc", "GET", "fast")
    slow = ("http://svc", "GET", "slow")
    for _ in range(20):
        delays.record(fast, 0.0001)
        delays.record(slow, 5.0)
    assert delays.delay(fast) == 0.005
    assert delays.delay(slow) == 0.2


def test_adaptive_window_forgets() -> None:
    """Samples older than the window no longer count (back to cold)."""
    clock = Clock()
    delays = ac.adaptive_delays(window=10.0, min_samples=5, max_delay=1.0, clock=clock)
    for _ in range(5):
        delays.record(KEY, 0.02)
    assert delays.delay(KEY) < 1.0
    clock.now = 25.0
    assert delays.delay(KEY) == 1.0


def test_adaptive_keys_are_bounded() -> None:
    """At most max_keys routes are remembered; the least recently used goes first."""
    delays = ac.adaptive_delays(min_samples=1, max_keys=2, max_delay=1.0, clock=Clock())
    for route in ("a", "b", "c"):
        delays.record(("e", "GET", route), 0.02)
    assert delays.delay(("e", "GET", "a")) == 1.0
    assert delays.delay(("e", "GET", "c")) < 1.0


async def test_adaptive_hedging_learns_from_successes() -> None:
    """Once warm, hedges go out after the learned percentile, not max_delay."""
    server = Timed([0.02] * 30 + [1.0, 0.02])
    delays: AdaptiveDelays = ac.adaptive_delays(0.9, min_delay=0.01, max_delay=0.5, min_samples=20)
    async with client_for(server, strategy=ac.parallel_strategy(2, delays)) as client:
        for _ in range(30):
            await client.request(ac.get("a"))
        start = anyio.current_time()
        resp = await client.request(ac.get("a"))
    assert resp.attempt == 2
    hedge_gap = server.starts[31] - server.starts[30]
    assert hedge_gap == pytest.approx(0.02, rel=0.15)
    assert server.starts[30] == pytest.approx(start, abs=1e-3)


# -- the inline first attempt ---------------------------------------------------------


async def test_attempt_1_runs_in_the_callers_task_and_starts_no_task() -> None:
    """When attempt 1 answers before the delay, it ran in the caller's own task, alone."""
    seen: list[tuple[asyncio.Task[object] | None, int]] = []

    async def handler(request: ac.Request) -> ac.Response:
        seen.append((asyncio.current_task(), len(asyncio.all_tasks())))
        return OK

    caller = asyncio.current_task()
    before = len(asyncio.all_tasks())
    async with client_for(handler, strategy=ac.parallel_strategy(3, 0.1)) as client:
        for _ in range(3):
            await client.request(ac.get("a"))
    assert seen == [(caller, before)] * 3


async def test_a_winning_hedge_interrupts_the_inline_attempt_cleanly() -> None:
    """The hung attempt 1 in the caller's task is interrupted; no cancellation is left."""
    server = Timed([5.0, 0.02])
    task = asyncio.current_task()
    assert task is not None
    async with client_for(server, strategy=ac.parallel_strategy(2, 0.1)) as client:
        resp = await client.request(ac.get("a"))
        assert task.cancelling() == 0
        await anyio.sleep(0.1)  # would raise if the interrupt were still pending
    assert (resp.attempt, server.cancelled) == (2, [1])


@pytest.mark.parametrize("offset", [-0.001, 0.0, 0.001])
async def test_a_cancellation_arriving_as_a_hedge_wins_is_never_swallowed(offset: float) -> None:
    """The caller cancelled around the moment a hedge wins: the cancellation reaches it."""
    server = Timed([5.0, 0.02])
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    async with client_for(server, strategy=ac.parallel_strategy(2, 0.1)) as client:

        async def call_then_wait() -> None:
            await client.request(ac.get("a"))
            await anyio.sleep(1.0)  # a response won the race: the cancellation lands here

        loop.call_at(loop.time() + 0.12 + offset, task.cancel)
        with pytest.raises(asyncio.CancelledError):
            await call_then_wait()
        assert task.uncancel() == 0
    assert 1 in server.cancelled


@pytest.mark.parametrize("offset", [-0.001, 0.0, 0.001])
async def test_a_deadline_as_a_hedge_wins_gives_a_response_or_the_deadline_error(
    offset: float,
) -> None:
    """Deadline and winning hedge in the same instant: a response or DeadlineExceededError,
    never a raw CancelledError, and no cancellation left behind."""
    server = Timed([5.0, 0.02])
    task = asyncio.current_task()
    assert task is not None
    before = len(asyncio.all_tasks())
    async with client_for(server, strategy=ac.parallel_strategy(2, 0.1)) as client:
        outcome: ac.Response | ac.DeadlineExceededError
        try:
            outcome = await client.request(ac.get("a"), timeout=0.12 + offset)
        except ac.DeadlineExceededError as exc:
            outcome = exc
        if isinstance(outcome, ac.Response):
            assert outcome.attempt == 2
        else:
            assert sorted(record.number for record in outcome.attempts) == [1, 2]
        assert task.cancelling() == 0
        await anyio.sleep(0.1)
    assert len(asyncio.all_tasks()) == before


async def test_a_hedge_failing_at_once_is_retried_from_its_task() -> None:
    """Attempt 2 fails fast while attempt 1 hangs: attempt 3 starts at once and wins."""
    server = Timed(
        [5.0, 0.01, 0.01],
        [OK, ac.Response(503), ac.Response(200, content=b"3")],
    )
    async with client_for(server, strategy=ac.parallel_strategy(3, 0.1)) as client:
        resp = await client.request(ac.get("a"))
    assert server.starts == [0.0, 0.1, 0.11]
    assert (resp.attempt, resp.content) == (3, b"3")
    assert server.cancelled == [1]


# -- Retry-After ------------------------------------------------------------------------


def unavailable(retry_after: str) -> ac.Response:
    return ac.Response(503, ac.Headers({"Retry-After": retry_after}))


async def test_retry_after_holds_back_the_next_attempt() -> None:
    """A 503 asking for 1 s: the next attempt waits 1 s, not the hedge delay."""
    server = Timed([0.01], [unavailable("1")])
    async with client_for(server, strategy=ac.parallel_strategy(2, 0.1)) as client:
        resp = await client.request(ac.get("a"), timeout=5.0)
    assert server.starts == [0.0, 1.01]
    assert resp.status == 200


async def test_retry_after_as_an_http_date_holds_back_the_next_attempt() -> None:
    """Retry-After as an HTTP date in the future is waited out too."""
    from aio_client._retry_after import format_http_date

    when = format_http_date(time.time() + 3)
    server = Timed([0.01], [unavailable(when)])
    async with client_for(server, strategy=ac.parallel_strategy(2, 0.1)) as client:
        resp = await client.request(ac.get("a"), timeout=10.0)
    assert resp.status == 200
    assert 2.0 <= server.starts[1] <= 3.1


async def test_retry_after_longer_than_the_budget_ends_the_call_with_that_answer() -> None:
    """Retry-After: 999999 sends nothing more: the 503 is the answer, at once."""
    server = Timed([0.01], [unavailable("999999")])
    async with client_for(server, strategy=ac.parallel_strategy(3, 0.05)) as client:
        start = anyio.current_time()
        resp = await client.request(ac.get("a"), timeout=2.0)
        took = anyio.current_time() - start
    assert (resp.status, len(server.starts)) == (503, 1)
    assert took == pytest.approx(0.01, abs=0.005)


async def test_retry_after_beyond_max_retry_after_is_not_waited_for() -> None:
    """A wait that fits the budget but exceeds max_retry_after ends the call too."""
    server = Timed([0.01], [unavailable("5")])
    strategy = ac.parallel_strategy(3, 0.05, max_retry_after=2.0)
    async with client_for(server, strategy=strategy) as client:
        resp = await client.request(ac.get("a"), timeout=30.0)
    assert (resp.status, len(server.starts)) == (503, 1)


async def test_retry_after_from_a_hedge_lets_the_attempt_in_flight_finish() -> None:
    """A hedge answered 503 + Retry-After: no more attempts, but attempt 1 may still win."""
    server = Timed([0.3, 0.01], [OK, unavailable("999")])
    async with client_for(server, strategy=ac.parallel_strategy(3, 0.1)) as client:
        resp = await client.request(ac.get("a"), timeout=5.0)
    assert server.starts == [0.0, 0.1]
    assert (resp.status, resp.attempt) == (200, 1)


def test_bad_max_retry_after_rejected() -> None:
    """max_retry_after must be a finite, non-negative number of seconds."""
    for bad in (-1.0, float("inf"), "3"):
        with pytest.raises(ac.ConfigError, match="max_retry_after"):
            ac.parallel_strategy(2, 0.1, max_retry_after=bad)  # type: ignore[arg-type]


# -- trio, through anyio ------------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_hedging_on_trio_hedges_cancels_losers_and_keeps_deadlines() -> None:
    """On trio the task-group path gives the same answers: the hedge wins, the loser is
    cancelled, Retry-After is honoured and the deadline ends a hung call."""
    server = Timed([5.0, 0.01])
    async with client_for(server, strategy=ac.parallel_strategy(2, 0.05)) as client:
        resp = await client.request(ac.get("a"))
        assert (resp.attempt, server.cancelled) == (2, [1])

        waiting = Timed([0.001], [unavailable("999")])
        async with client_for(waiting, strategy=ac.parallel_strategy(3, 0.05)) as other:
            refused = await other.request(ac.get("a"), timeout=1.0)
        assert (refused.status, len(waiting.starts)) == (503, 1)

        hung = Timed([5.0])
        async with client_for(hung, strategy=ac.parallel_strategy(3, 0.02)) as third:
            with pytest.raises(ac.DeadlineExceededError) as info:
                await third.request(ac.get("a"), timeout=0.1)
        assert sorted(a.number for a in info.value.attempts) == [1, 2, 3]


async def test_hedges_run_in_their_own_calls_context() -> None:
    """A hedge sees its own call's context (ambient deadline, tracing), never the one of
    another call that happened to arm the client's shared timer."""
    tag: contextvars.ContextVar[str] = contextvars.ContextVar("tag")
    seen: dict[str, list[tuple[str, float | None]]] = {"a": [], "b": []}

    async def handler(request: ac.Request) -> ac.Response:
        deadline = ac.current_deadline()
        seen[tag.get()].append(
            (request.headers["x-request-attempt"], None if deadline is None else deadline.at)
        )
        await anyio.sleep(1.0 if request.headers["x-request-attempt"] == "1" else 0.01)
        return OK

    async with client_for(handler, strategy=ac.parallel_strategy(2, 0.05)) as client:

        async def call(name: str, after: float, budget: float) -> None:
            await anyio.sleep(after)
            tag.set(name)
            await client.request(ac.get("a"), timeout=budget)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "a", 0.0, 5.0)
            tg.start_soon(call, "b", 0.01, 3.0)
    assert [attempt for attempt, _ in seen["a"]] == ["1", "2"]
    assert [attempt for attempt, _ in seen["b"]] == ["1", "2"]
    assert seen["a"][0][1] == seen["a"][1][1] == pytest.approx(5.0)
    assert seen["b"][0][1] == seen["b"][1][1] == pytest.approx(3.01)


@pytest.mark.parametrize("policy", ["bulkhead", "rate_limiter"])
async def test_a_hedge_a_local_policy_refuses_leaves_the_attempt_in_flight_to_answer(
    policy: str,
) -> None:
    """A hedge refused before it was sent (a full bulkhead, an empty rate limit) ends
    nothing: the attempt in flight still answers the call."""
    stage = as_stage(ac.Bulkhead(1) if policy == "bulkhead" else ac.RateLimiter("1/s"))
    script = Script([0.05])
    async with client_for(
        script, strategy=ac.parallel_strategy(2, 0.01), attempt_stages=[stage]
    ) as client:
        response = await client.get("a")
    assert response.status == 200
    assert len(script.requests) == 1


async def test_a_hedged_probe_closes_a_half_open_breaker() -> None:
    """In half-open the breaker lets one probe through and refuses the call's own hedge;
    the probe's answer closes the breaker (the refusal used to end the call and cancel it)."""
    breaker = ac.CircuitBreaker(failure_threshold=1, break_duration=0.2)
    script = Script([ac.Response(503), 0.05])
    async with client_for(
        script, strategy=ac.parallel_strategy(2, 0.01), circuit_breaker=breaker
    ) as client:
        assert (await client.get("a", strategy=ac.single_attempt_strategy())).status == 503
        with pytest.raises(ac.CircuitOpenError):
            await client.get("a")
        await anyio.sleep(0.25)
        assert (await client.get("a")).status == 200  # the probe; its hedge was refused
        assert len(script.requests) == 2
        assert (await client.get("a")).status == 200  # closed: the hedge goes out again
        assert len(script.requests) == 4
