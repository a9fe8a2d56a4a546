"""Fan-out: one deadline, bounded concurrency, every outcome kept, quorum; asyncio and trio.

Every test runs on both backends, on virtual time: asyncio through the unit tests'
virtual-time loop, trio through its autojumping mock clock.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
import trio.testing

import aio_client as ac
from aio_client.transports import MemoryTransport

from .helpers import client_for


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest, anyio_backend: Any) -> Any:
    """The unit tests' virtual-time asyncio (tests/unit/conftest.py) and virtual-time trio."""
    if request.param == "trio":
        return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})
    return anyio_backend


class Upstream:
    """A handler answering ``n/<number>``: sleeps, then answers 200 with the number.

    ``delays`` and ``statuses`` pick per number (``delay`` and 200 otherwise);
    ``errors`` raise instead. Records concurrency, starts, ends and cancellations.
    """

    def __init__(
        self,
        delay: float = 0.01,
        delays: dict[int, float] | None = None,
        statuses: dict[int, int] | None = None,
        errors: dict[int, ac.AioClientError] | None = None,
    ) -> None:
        self.delay = delay
        self.delays = delays or {}
        self.statuses = statuses or {}
        self.errors = errors or {}
        self.in_flight = 0
        self.most_in_flight = 0
        self.started: list[tuple[int, float]] = []
        self.finished: list[int] = []
        self.cancelled: list[int] = []
        self.deadlines: list[float | None] = []
        self.headers: list[str | None] = []

    async def __call__(self, request: ac.Request) -> ac.Response:
        number = int(request.url.rsplit("/", 1)[1])
        self.started.append((number, round(anyio.current_time(), 4)))
        deadline = ac.current_deadline()
        self.deadlines.append(None if deadline is None else round(deadline.at, 4))
        self.headers.append(request.headers.get("x-request-timeout"))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await anyio.sleep(self.delays.get(number, self.delay))
        except BaseException:
            self.cancelled.append(number)
            raise
        finally:
            self.in_flight -= 1
        self.finished.append(number)
        if number in self.errors:
            raise self.errors[number]
        return ac.Response(self.statuses.get(number, 200), content=str(number).encode())


def numbered(count: int) -> list[ac.Request]:
    return [ac.get(f"n/{number}") for number in range(count)]


def numbers(outcomes: list[ac.Response | ac.AioClientError]) -> list[int | str]:
    """Each outcome as the number the upstream answered, or the error's class name."""
    return [
        int(outcome.content) if isinstance(outcome, ac.Response) else type(outcome).__name__
        for outcome in outcomes
    ]


# -- order, concurrency, rate ----------------------------------------------------------


async def test_outcomes_in_input_order_with_at_most_concurrency_in_flight() -> None:
    """1,000 calls with concurrency=50: never more than 50 at the upstream, outcomes in order."""
    upstream = Upstream(delays={n: (n % 7) * 0.001 for n in range(1000)})
    async with client_for(upstream) as client:
        outcomes = await client.fan_out(numbered(1000), concurrency=50)
    assert numbers(outcomes) == list(range(1000))
    assert upstream.most_in_flight == 50


async def test_rate_spaces_the_starts() -> None:
    """rate=10 starts one call every 0.1 s, even with room for more in flight."""
    upstream = Upstream(delay=1.0)
    async with client_for(upstream) as client:
        await client.fan_out(numbered(4), concurrency=10, rate=10.0)
    assert [at for _, at in upstream.started] == [0.0, 0.1, 0.2, 0.3]


async def test_sync_iterator_is_pulled_only_when_a_call_can_start() -> None:
    """A generator of requests is pulled only when fewer than ``concurrency`` calls are in
    flight: one item per free slot, never ahead."""
    upstream = Upstream()
    ahead: list[int] = []

    def requests() -> Iterator[ac.Request]:
        for number in range(100):
            ahead.append(number - len(upstream.finished))
            yield ac.get(f"n/{number}")

    async with client_for(upstream) as client:
        outcomes = await client.fan_out(requests(), concurrency=5)
    assert numbers(outcomes) == list(range(100))
    assert max(ahead) == 4


# -- the deadline ------------------------------------------------------------------------


async def test_fan_out_deadline_ends_stragglers_and_keeps_the_rest() -> None:
    """timeout=0.3 with 1% of calls taking 2 s: it returns at 0.3 s, those calls end with
    DeadlineExceededError (their attempts attached), the upstream sees them cancelled,
    and every other call has its response."""
    slow = {37, 161}
    upstream = Upstream(delays=dict.fromkeys(slow, 2.0))
    async with client_for(upstream) as client:
        start = anyio.current_time()
        outcomes = await client.fan_out(numbered(200), concurrency=50, timeout=0.3)
        assert anyio.current_time() - start == pytest.approx(0.3, abs=0.01)
    for number, outcome in enumerate(outcomes):
        if number in slow:
            assert isinstance(outcome, ac.DeadlineExceededError)
            assert outcome.may_have_reached_server
            assert len(outcome.attempts) == 1
        else:
            assert isinstance(outcome, ac.Response)
            assert int(outcome.content) == number
    assert sorted(upstream.cancelled) == sorted(slow)


async def test_calls_never_started_get_a_not_sent_deadline_error() -> None:
    """With one call at a time, calls the deadline leaves no room for are never sent:
    DeadlineExceededError with may_have_reached_server=False, and one per input item."""
    upstream = Upstream(delay=0.1)
    async with client_for(upstream) as client:
        outcomes = await client.fan_out(numbered(10), concurrency=1, timeout=0.25)
    assert numbers(outcomes) == [0, 1] + ["DeadlineExceededError"] * 8
    in_flight, never_started = outcomes[2], outcomes[3:]
    assert isinstance(in_flight, ac.DeadlineExceededError)
    assert in_flight.may_have_reached_server
    assert all(
        isinstance(error, ac.DeadlineExceededError) and not error.may_have_reached_server
        for error in never_started
    )
    assert [number for number, _ in upstream.started] == [0, 1, 2]


async def test_every_call_inherits_the_fan_out_deadline_as_ambient() -> None:
    """Each call's ambient deadline and X-Request-Timeout are the fan-out's; an enclosing
    shorter ambient deadline wins over the fan-out's timeout."""
    upstream = Upstream(delay=0.0)
    async with client_for(upstream) as client:
        await client.fan_out(numbered(3), timeout=2.0)
        assert upstream.deadlines == [2.0] * 3
        assert upstream.headers == ["2.000"] * 3
        with ac.ambient(timeout=0.5):
            await client.fan_out(numbered(2), timeout=2.0)
    assert upstream.deadlines[3:] == [0.5] * 2


async def test_an_explicit_deadline_bounds_the_fan_out() -> None:
    """deadline= (an absolute Deadline) works as timeout= does."""
    upstream = Upstream(delay=1.0)
    async with client_for(upstream) as client:
        outcomes = await client.fan_out(
            numbered(2), deadline=ac.Deadline(anyio.current_time() + 0.2)
        )
    assert numbers(outcomes) == ["DeadlineExceededError"] * 2


# -- quorum and fail-fast ----------------------------------------------------------------


async def test_min_success_returns_at_the_quorum_and_cancels_the_rest() -> None:
    """5 replicas, min_success=3, two slow: it returns at the third success, the two slow
    calls are cancelled (and awaited) and end with FanOutStoppedError."""
    upstream = Upstream(delays={0: 5.0, 1: 0.01, 2: 5.0, 3: 0.02, 4: 0.03})
    async with client_for(upstream) as client:
        start = anyio.current_time()
        outcomes = await client.fan_out(numbered(5), min_success=3)
        assert anyio.current_time() - start == pytest.approx(0.03, abs=0.005)
        assert numbers(outcomes) == ["FanOutStoppedError", 1, "FanOutStoppedError", 3, 4]
        assert sorted(upstream.cancelled) == [0, 2]
        for stopped in (outcomes[0], outcomes[2]):
            assert isinstance(stopped, ac.FanOutStoppedError)
            assert (stopped.reason, stopped.may_have_reached_server) == ("min_success", True)
        await anyio.sleep(10.0)
    assert upstream.finished == [1, 3, 4]  # nothing ran on after the fan-out returned


async def test_min_success_counts_only_2xx_and_runs_on_when_it_cannot_be_reached() -> None:
    """A 503 is not a success: with too few 2xx answers every call runs to its end."""
    upstream = Upstream(statuses={0: 503, 1: 503})
    async with client_for(upstream, strategy=ac.single_attempt_strategy()) as client:
        outcomes = await client.fan_out(numbered(3), min_success=2)
    assert [o.status for o in outcomes if isinstance(o, ac.Response)] == [503, 503, 200]


async def test_calls_not_started_at_the_quorum_are_never_sent() -> None:
    """Items after the quorum are not sent: FanOutStoppedError, may_have_reached_server=False."""
    upstream = Upstream()
    async with client_for(upstream) as client:
        outcomes = await client.fan_out(numbered(10), concurrency=2, min_success=2)
    assert numbers(outcomes)[:2] == [0, 1]
    assert all(
        isinstance(o, ac.FanOutStoppedError) and not o.may_have_reached_server for o in outcomes[2:]
    )
    assert len(upstream.started) == 2


async def test_fail_fast_stops_everything_at_the_first_failure() -> None:
    """fail_fast=True: the first final failure (an error or a non-2xx response) cancels the
    calls in flight and starts no more; the failure itself is kept."""
    upstream = Upstream(delays={0: 1.0, 1: 0.05}, statuses={1: 404})
    async with client_for(upstream) as client:
        start = anyio.current_time()
        outcomes = await client.fan_out(numbered(6), concurrency=2, fail_fast=True)
        assert anyio.current_time() - start == pytest.approx(0.05, abs=0.005)
    first, failure, *never = outcomes
    assert isinstance(failure, ac.Response)
    assert failure.status == 404
    assert isinstance(first, ac.FanOutStoppedError)
    assert (first.reason, first.may_have_reached_server) == ("fail_fast", True)
    assert all(
        isinstance(o, ac.FanOutStoppedError) and not o.may_have_reached_server for o in never
    )
    assert upstream.cancelled == [0]

    erring = Upstream(errors={0: ac.ProtocolError("garbage")})
    async with client_for(erring, strategy=ac.single_attempt_strategy()) as client:
        outcomes = await client.fan_out(numbered(3), concurrency=1, fail_fast=True)
    assert numbers(outcomes) == ["ProtocolError", "FanOutStoppedError", "FanOutStoppedError"]


# -- as completed ---------------------------------------------------------------------------


async def test_as_completed_yields_each_outcome_with_its_index_as_it_ends() -> None:
    """``async with ... as outcomes``: (index, outcome) pairs in completion order."""
    upstream = Upstream(delays={0: 0.3, 1: 0.1, 2: 0.2})
    async with client_for(upstream) as client, client.fan_out(numbered(3)) as outcomes:
        seen = [(index, numbers([outcome])[0]) async for index, outcome in outcomes]
    assert seen == [(1, 1), (2, 2), (0, 0)]


async def test_as_completed_yields_stopped_calls_too() -> None:
    """At a quorum, the cancelled and never-started calls are yielded as well: one
    outcome per item of a sequence."""
    upstream = Upstream(delays={0: 5.0})
    async with (
        client_for(upstream) as client,
        client.fan_out(numbered(6), concurrency=3, min_success=2) as outcomes,
    ):
        seen = {index: numbers([outcome])[0] async for index, outcome in outcomes}
    assert seen == {
        0: "FanOutStoppedError",
        1: 1,
        2: 2,
        3: "FanOutStoppedError",
        4: "FanOutStoppedError",
        5: "FanOutStoppedError",
    }


async def test_leaving_the_block_early_cancels_the_calls_still_running() -> None:
    """Breaking out of ``async for`` cancels and awaits the rest: nothing runs after."""
    upstream = Upstream(delays={0: 0.01}, delay=1.0)
    async with client_for(upstream) as client:
        async with client.fan_out(numbered(5)) as outcomes:
            async for index, _ in outcomes:
                assert index == 0
                break
        assert sorted(upstream.cancelled) == [1, 2, 3, 4]
        await anyio.sleep(5.0)
    assert upstream.finished == [0]


async def test_an_error_in_the_block_propagates_as_itself() -> None:
    """An exception raised while reading reaches the caller unwrapped, calls cancelled."""
    upstream = Upstream(delay=1.0)
    async with client_for(upstream) as client:

        async def read_then_fail() -> None:
            async with client.fan_out(numbered(3)):
                await anyio.sleep(0.1)
                raise KeyError("mine")

        with pytest.raises(KeyError):
            await read_then_fail()
    assert sorted(upstream.cancelled) == [0, 1, 2]


async def test_async_iterable_is_pulled_lazily() -> None:
    """An async generator is pulled only when a call can start: however long it is, at
    most ``concurrency`` calls plus ``concurrency`` unread outcomes are held."""
    upstream = Upstream(delay=0.001)
    read = 0
    ahead: list[int] = []

    async def requests() -> AsyncIterator[ac.Request]:
        for number in range(1000):
            ahead.append(number - read)
            yield ac.get(f"n/{number}")

    async with (
        client_for(upstream) as client,
        client.fan_out(requests(), concurrency=10) as outcomes,
    ):
        async for _, _ in outcomes:
            read += 1
            if read % 100 == 0:
                await anyio.sleep(0.05)  # a slow reader: the calls must wait for it
    assert read == 1000
    assert max(ahead) <= 2 * 10 + 1


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_memory_stays_bounded_over_a_long_async_iterable() -> None:
    """Requests carrying 20 KB each, 3,000 of them (60 MB if held): the traced peak
    stays under 5 MB (about 1.3 MB measured), since only ``concurrency`` requests and
    outcomes live at once."""

    async def handler(request: ac.Request) -> ac.Response:
        assert isinstance(request.content, bytes)
        return ac.Response(200, content=request.content[:10])

    async def requests() -> AsyncIterator[ac.Request]:
        for number in range(3000):
            yield ac.put(f"n/{number}", content=bytes([number % 256]) * 20_000)

    count = 0
    async with ac.Client(MemoryTransport(handler), "http://svc") as client:
        gc.collect()
        tracemalloc.start()
        try:
            async with client.fan_out(requests(), concurrency=50) as outcomes:
                async for _, outcome in outcomes:
                    assert isinstance(outcome, ac.Response)
                    count += 1
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert count == 3000
    assert peak < 5_000_000, peak


# -- cancellation, several clients, the shared budget ----------------------------------------


async def test_cancelling_the_caller_cancels_every_call() -> None:
    """A cancelled caller cancels every call in flight; none runs after."""
    upstream = Upstream(delay=1.0)
    async with client_for(upstream) as client:
        with anyio.move_on_after(0.1) as scope:
            await client.fan_out(numbered(20), concurrency=5)
        assert scope.cancelled_caught
        assert sorted(upstream.cancelled) == [0, 1, 2, 3, 4]
        await anyio.sleep(5.0)
    assert upstream.finished == []
    assert len(upstream.started) == 5


async def test_fan_out_over_several_clients() -> None:
    """aio_client.fan_out takes (client, request) pairs; an item that is not one ends with
    InvalidRequestError and the others go on."""
    first, second = Upstream(), Upstream()
    async with client_for(first) as one, client_for(second) as two:
        calls: list[Any] = [(one, ac.get("n/1")), (two, ac.get("n/2")), ("nope", 3)]
        outcomes = await ac.fan_out(calls, concurrency=2, timeout=1.0)
    assert numbers(outcomes) == [1, 2, "InvalidRequestError"]
    assert "(Client, Request) pairs" in str(outcomes[2])
    assert [n for n, _ in first.started] == [1]
    assert [n for n, _ in second.started] == [2]


async def test_hedged_calls_draw_from_the_clients_retry_budget() -> None:
    """100 hedged calls to a slow upstream: the hedges stay within the client's budget
    (ratio 0.1, no floor), not one per call."""
    upstream = Upstream(delay=0.2)
    budget = ac.RetryBudget(ratio=0.1, min_per_second=0.0)
    async with client_for(
        upstream, strategy=ac.parallel_strategy(2, 0.05), budget=budget
    ) as client:
        outcomes = await client.fan_out(numbered(100), concurrency=100)
    assert all(isinstance(o, ac.Response) for o in outcomes)
    assert 100 < len(upstream.started) <= 110


class FirstAttemptsSlow(Upstream):
    """An upstream whose first attempts of the numbers in ``slow`` take ``slow_delay``;
    records each attempt as (number, attempt number, start time)."""

    def __init__(self, slow: set[int], slow_delay: float = 1.0, delay: float = 0.01) -> None:
        super().__init__(delay=delay)
        self.slow = slow
        self.slow_delay = slow_delay
        self.attempts: list[tuple[int, int, float]] = []

    async def __call__(self, request: ac.Request) -> ac.Response:
        number = int(request.url.rsplit("/", 1)[1])
        attempt = int(request.headers.get("x-request-attempt") or 1)
        self.attempts.append((number, attempt, round(anyio.current_time(), 4)))
        if attempt == 1 and number in self.slow:
            self.delays[number] = self.slow_delay
        else:
            self.delays.pop(number, None)
        return await super().__call__(request)

    def hedges(self) -> list[tuple[int, float]]:
        return [(number, at) for number, attempt, at in self.attempts if attempt > 1]


def sequence_or_generator(count: int, kind: str) -> Any:
    requests = numbered(count)
    return requests if kind == "sequence" else (request for request in requests)


@pytest.mark.parametrize("kind", ["sequence", "generator"])
async def test_a_straggler_is_hedged_once_its_siblings_answered(kind: str) -> None:
    """20 calls answering in 10 ms, one of them stuck on its first attempt: once the other
    19 answered, it is hedged when it has run twice their median time (about 21 ms), not
    at its strategy's 0.5 s delay; its stuck attempt is cancelled and nothing is left
    running. A generator's calls are counted once it is exhausted."""
    upstream = FirstAttemptsSlow(slow={7})
    strategy = ac.parallel_strategy(2, 0.5)
    async with client_for(upstream, strategy=strategy) as client:
        start = anyio.current_time()
        outcomes = await client.fan_out(sequence_or_generator(20, kind), concurrency=20)
        took = anyio.current_time() - start
    assert numbers(outcomes) == list(range(20))
    [(number, hedged_at)] = upstream.hedges()
    assert number == 7
    assert 0.02 <= hedged_at - start <= 0.025
    assert took <= 0.04
    assert upstream.cancelled == [7]
    assert upstream.in_flight == 0


async def test_hedge_stragglers_false_waits_for_the_strategys_delay() -> None:
    """hedge_stragglers=False: the stuck call is hedged at its strategy's 0.5 s delay only."""
    upstream = FirstAttemptsSlow(slow={7})
    async with client_for(upstream, strategy=ac.parallel_strategy(2, 0.5)) as client:
        start = anyio.current_time()
        outcomes = await client.fan_out(numbered(20), concurrency=20, hedge_stragglers=False)
    assert numbers(outcomes) == list(range(20))
    assert [(n, round(at - start, 3)) for n, at in upstream.hedges()] == [(7, 0.5)]


async def test_stragglers_are_looked_for_only_among_the_last_tenth() -> None:
    """Five stuck calls of 20 (more than a tenth) wait for their strategy's delay: until
    the fan-out is down to its last calls, a slow call is not a straggler."""
    upstream = FirstAttemptsSlow(slow={1, 3, 5, 7, 9})
    async with client_for(upstream, strategy=ac.parallel_strategy(2, 0.5)) as client:
        start = anyio.current_time()
        outcomes = await client.fan_out(numbered(20), concurrency=20)
    assert numbers(outcomes) == list(range(20))
    assert sorted((n, round(at - start, 3)) for n, at in upstream.hedges()) == [
        (n, 0.5) for n in (1, 3, 5, 7, 9)
    ]


async def test_a_straggler_is_hedged_again_while_its_strategy_has_attempts_left() -> None:
    """A straggler whose hedge is stuck too is hedged once more when that hedge has run
    twice the median (three attempts allowed), and never beyond ``attempts``."""
    upstream = FirstAttemptsSlow(slow={7})
    first_two_slow = upstream.__call__

    async def handler(request: ac.Request) -> ac.Response:
        number = int(request.url.rsplit("/", 1)[1])
        if number == 7 and request.headers.get("x-request-attempt") == "2":
            upstream.delays[7] = 1.0
            upstream.attempts.append((7, 2, round(anyio.current_time(), 4)))
            return await Upstream.__call__(upstream, request)
        return await first_two_slow(request)

    async with client_for(handler, strategy=ac.parallel_strategy(3, 0.5)) as client:
        start = anyio.current_time()
        outcomes = await client.fan_out(numbered(20), concurrency=20)
    assert numbers(outcomes) == list(range(20))
    hedges = [(n, round(at - start, 3)) for n, at in upstream.hedges()]
    assert [n for n, _ in hedges] == [7, 7]
    assert 0.04 <= hedges[1][1] <= 0.05
    assert sorted(upstream.cancelled) == [7, 7]
    assert upstream.in_flight == 0


async def test_straggler_hedges_draw_from_the_retry_budget() -> None:
    """100 calls, the last tenth stuck: straggler hedges stay within the client's retry
    budget (ratio 0.05, no floor: five hedges), the others wait for their calls to end."""
    upstream = FirstAttemptsSlow(slow=set(range(90, 100)), slow_delay=0.3)
    budget = ac.RetryBudget(ratio=0.05, min_per_second=0.0)
    async with client_for(
        upstream, strategy=ac.parallel_strategy(2, 10.0), budget=budget
    ) as client:
        outcomes = await client.fan_out(numbered(100), concurrency=100)
    assert numbers(outcomes) == list(range(100))
    assert len(upstream.hedges()) == 5
    assert budget.exhausted_count == 5
    assert upstream.in_flight == 0


async def test_no_straggler_is_hedged_after_the_fan_out_stopped() -> None:
    """A quorum reached cancels the calls left; none of them is hedged as a straggler."""
    upstream = FirstAttemptsSlow(slow={3, 4})
    async with client_for(upstream, strategy=ac.parallel_strategy(2, 0.5)) as client:
        outcomes = await client.fan_out(numbered(5), concurrency=5, min_success=3)
    assert numbers(outcomes)[:3] == [0, 1, 2]
    assert upstream.hedges() == []
    assert sorted(upstream.cancelled) == [3, 4]


async def test_unexpected_errors_are_raised_as_themselves() -> None:
    """A programming error (a closed client in a pair) is raised as is, not in a group."""
    closed = client_for(Upstream())
    await closed.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await ac.fan_out([(closed, ac.get("n/1"))])


# -- misuse ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": True}, "concurrency"),
        ({"rate": 0.0}, "rate"),
        ({"rate": float("inf")}, "rate"),
        ({"rate": "10/s"}, "calls per second"),
        ({"timeout": -1.0}, "timeout"),
        ({"deadline": 5.0}, "deadline"),
        ({"min_success": 0}, "min_success"),
        ({"min_success": 4}, "min_success"),
        ({"fail_fast": "yes"}, "fail_fast"),
        ({"strategy": object()}, "strategy"),
        ({"idempotent": 1}, "idempotent"),
        ({"hedge_stragglers": "yes"}, "hedge_stragglers"),
    ],
)
async def test_bad_settings_are_refused_naming_the_setting(
    options: dict[str, Any], name: str
) -> None:
    """Each bad setting raises ConfigError naming it, before anything is sent."""
    async with client_for(Upstream()) as client:
        with pytest.raises(ac.ConfigError, match=name):
            client.fan_out(numbered(3), **options)


async def test_requests_must_be_iterable() -> None:
    """Something that is not an iterable of requests is refused with ConfigError."""
    async with client_for(Upstream()) as client:
        with pytest.raises(ac.ConfigError, match="requests must be an iterable"):
            client.fan_out(ac.get("n/1"))  # type: ignore[arg-type]
        with pytest.raises(ac.ConfigError, match="calls must be an iterable"):
            ac.fan_out(None)  # type: ignore[arg-type]


async def test_a_fan_out_runs_once_and_warns_when_never_used() -> None:
    """Awaiting (or entering) a fan-out twice raises; one never used warns, naming it."""
    async with client_for(Upstream()) as client:
        once = client.fan_out(numbered(1))
        await once
        with pytest.raises(RuntimeError):
            await once
        with pytest.raises(RuntimeError, match="runs once"):
            async with once:
                pass
        entered = client.fan_out(numbered(1))
        async with entered as outcomes:
            async for _ in outcomes:
                pass
        with pytest.raises(RuntimeError):
            await entered
        # The dropped fan-out is finalised at the end of its statement.
        with pytest.warns(RuntimeWarning, match=r"Client\.fan_out.*never awaited"):
            client.fan_out(numbered(1))
