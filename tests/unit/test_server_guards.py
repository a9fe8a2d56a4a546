"""Resilience policies as server guards, on the shared core (virtual time, injected clocks)."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any

import anyio
import pytest

from aio_client import Bulkhead, CircuitBreaker, CircuitState, ConfigError, RateLimiter
from aio_client._cancel import CancelReason
from aio_client.server import PriorityLoadShedder, ServerOutcome, ServerOutcomeKind
from aio_client.server._core import Admission, Rejection, ServerCore
from aio_client.server._guards import ClientInfo, forwarded_address

from .helpers import StatusExchange

Headers = Iterable[tuple[str, str]]


class Clock:
    """A hand-moved monotonic clock (seconds)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def serve(
    core: ServerCore,
    handler: Callable[[], Awaitable[int]],
    headers: Headers = (),
    *,
    peer: str | None = "10.0.0.1",
) -> int | Rejection:
    """One request through the core, as an adapter would send it."""
    decision = core.admit(headers, method="GET", peer=peer)
    if isinstance(decision, Rejection):
        return decision
    return await core.run(decision, StatusExchange(handler))


def answering(status: int, calls: list[int] | None = None) -> Callable[[], Awaitable[int]]:
    """A handler answering ``status`` (counting its runs in ``calls``)."""

    async def handler() -> int:
        if calls is not None:
            calls.append(status)
        return status

    return handler


def header(rejection: int | Rejection, name: str) -> str | None:
    """A header of a core rejection, or ``None``."""
    assert isinstance(rejection, Rejection), rejection
    return dict(rejection.headers).get(name)


async def test_rate_limit_answers_429_with_the_limiters_real_wait_rounded_up() -> None:
    """The 429's Retry-After is the limiter's next-token wait at that moment, rounded up."""
    clock = Clock()
    limiter = RateLimiter((2, 10.0), clock=clock)
    core = ServerCore(guards=[limiter])
    calls: list[int] = []
    assert await serve(core, answering(200, calls)) == 200
    assert await serve(core, answering(200, calls)) == 200
    refused = await serve(core, answering(200, calls))
    assert isinstance(refused, Rejection)
    assert refused.status == 429
    assert header(refused, "retry-after") == "5"  # an empty bucket refills 1 token in 5 s
    clock.now += 1.5
    expected = math.ceil((1.0 - limiter.available()) / (2 / 10.0))
    refused = await serve(core, answering(200, calls))
    assert header(refused, "retry-after") == str(expected) == "4"  # 3.5 s, rounded up
    assert "x-do-not-retry" not in dict(refused.headers)  # type: ignore[union-attr]
    assert calls == [200, 200]
    assert core.stats.rate_limited == 2
    clock.now += 3.5
    assert await serve(core, answering(200, calls)) == 200


async def test_keyed_limits_use_the_peer_and_ignore_a_spoofed_forwarded_header() -> None:
    """By default each peer address has its own bucket; X-Forwarded-For changes nothing."""
    limiter = RateLimiter((1, 60.0), key=lambda client: client, clock=Clock())
    core = ServerCore(guards=[limiter])
    assert await serve(core, answering(200), peer="10.0.0.1") == 200
    assert await serve(core, answering(200), peer="10.0.0.2") == 200
    spoofed = await serve(
        core, answering(200), [("X-Forwarded-For", "198.51.100.7")], peer="10.0.0.1"
    )
    assert isinstance(spoofed, Rejection)
    assert spoofed.status == 429
    assert limiter.available("198.51.100.7") == 1.0  # no bucket was made for the spoof


async def test_trusted_forwarded_header_keys_on_its_left_most_address() -> None:
    """forwarded_header opts in: the left-most address keys; garbage falls back to the peer."""
    limiter = RateLimiter((1, 60.0), key=lambda client: client, clock=Clock())
    core = ServerCore(guards=[limiter], forwarded_header="X-Forwarded-For")
    proxy = "10.9.9.9"
    chain = [("x-forwarded-for", "203.0.113.5, 10.0.0.3")]
    assert await serve(core, answering(200), chain, peer=proxy) == 200
    again = await serve(core, answering(200), [("x-forwarded-for", "203.0.113.5")], peer=proxy)
    assert isinstance(again, Rejection)
    assert again.status == 429
    other = [("x-forwarded-for", "203.0.113.6")]
    assert await serve(core, answering(200), other, peer=proxy) == 200
    assert await serve(core, answering(200), [("x-forwarded-for", "junk")], peer=proxy) == 200
    assert limiter.available(proxy) == 0.0  # the garbage request was keyed by its peer


def test_forwarded_address_reads_the_common_forms() -> None:
    """Left-most entry, RFC 7239 for=, ports and IPv6 brackets; non-addresses are None."""
    assert forwarded_address("x-forwarded-for", " 203.0.113.5 , 10.0.0.1") == "203.0.113.5"
    assert forwarded_address("x-forwarded-for", "203.0.113.5:8080") == "203.0.113.5"
    assert forwarded_address("x-forwarded-for", "2001:DB8::1") == "2001:db8::1"
    assert forwarded_address("forwarded", 'for="[2001:db8::1]:4711";proto=http') == "2001:db8::1"
    assert forwarded_address("forwarded", "proto=https;For=192.0.2.60, for=10.0.0.1") == (
        "192.0.2.60"
    )
    assert forwarded_address("forwarded", "for=unknown") is None
    assert forwarded_address("x-forwarded-for", "") is None
    assert forwarded_address("x-real-ip", "x" * 10_000) is None


async def test_custom_client_key_sees_the_headers_and_a_raising_one_costs_nothing() -> None:
    """client_key may key on a header; one that raises falls back to the address, never a 500."""
    seen: list[ClientInfo] = []

    def by_api_key(client: ClientInfo) -> Hashable:
        seen.append(client)
        return dict(client.headers)["x-api-key"]

    limiter = RateLimiter((1, 60.0), key=lambda client: client, clock=Clock())
    core = ServerCore(guards=[limiter], client_key=by_api_key)
    assert await serve(core, answering(200), [("X-Api-Key", "a")], peer="10.0.0.1") == 200
    refused = await serve(core, answering(200), [("X-Api-Key", "a")], peer="10.0.0.2")
    assert isinstance(refused, Rejection)
    assert refused.status == 429
    assert await serve(core, answering(200), [], peer="10.0.0.3") == 200  # raised: keyed by peer
    assert seen[0].peer == "10.0.0.1"
    assert seen[0].forwarded is None


async def test_bulkhead_refuses_with_503_while_full_and_always_gives_permits_back() -> None:
    """Bulkhead full: 503 without Retry-After; deadline, token cancel and outer cancel release."""
    bulkhead = Bulkhead(1)
    core = ServerCore(guards=[bulkhead])
    release = anyio.Event()
    results: list[int | Rejection] = []

    async def blocked() -> int:
        await release.wait()
        return 200

    async with anyio.create_task_group() as tasks:

        async def first() -> None:
            results.append(await serve(core, blocked))

        tasks.start_soon(first)
        await anyio.sleep(0.1)
        refused = await serve(core, answering(200))
        assert isinstance(refused, Rejection)
        assert refused.status == 503
        assert header(refused, "retry-after") is None
        assert core.stats.refused == 1
        release.set()
    assert results == [200]
    assert bulkhead.active == 0

    async def forever() -> int:
        await anyio.sleep(3600)
        return 200

    late = await serve(core, forever, [("x-request-timeout", "1")])
    assert isinstance(late, Rejection)
    assert late.status == 504
    assert bulkhead.active == 0

    decision = core.admit([], peer="10.0.0.1")
    assert isinstance(decision, Admission)
    async with anyio.create_task_group() as tasks:

        async def hang_up() -> None:
            await anyio.sleep(0.1)
            decision.token.cancel(CancelReason.CLIENT_DISCONNECTED)

        tasks.start_soon(hang_up)
        gone = await core.run(decision, StatusExchange(forever))
    assert isinstance(gone, Rejection)
    assert gone.status == 499
    assert bulkhead.active == 0

    with anyio.move_on_after(0.1):  # the server cancelling the request's task
        await serve(core, forever)
    assert bulkhead.active == 0

    async def broken() -> int:
        raise ValueError("bug")

    with pytest.raises(ValueError, match="bug"):
        await serve(core, broken)
    assert bulkhead.active == 0
    assert await serve(core, answering(200)) == 200


async def test_a_waiting_bulkhead_request_is_bounded_by_its_deadline() -> None:
    """A request queued for a permit ends with its deadline (504) and holds nothing."""
    bulkhead = Bulkhead(1, max_waiting=1)
    core = ServerCore(guards=[bulkhead])
    release = anyio.Event()

    async def blocked() -> int:
        await release.wait()
        return 200

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(serve, core, blocked)
        await anyio.sleep(0.1)
        queued = await serve(core, answering(200), [("x-request-timeout", "2")])
        assert isinstance(queued, Rejection)
        assert queued.status == 504
        assert bulkhead.waiting == 0
        release.set()
    assert bulkhead.active == 0


async def test_breaker_opens_on_5xx_answers_503_with_retry_after_then_recovers() -> None:
    """5xx and exceptions fail, 4xx and cancellation do not; open gives 503 + Retry-After."""
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, break_duration=30.0, clock=clock)
    core = ServerCore(guards=[breaker])
    calls: list[int] = []
    for _ in range(5):
        assert await serve(core, answering(404, calls)) == 404
    assert await serve(core, answering(500, calls)) == 500

    async def broken() -> int:
        raise ValueError("bug")

    with pytest.raises(ValueError, match="bug"):
        await serve(core, broken)

    async def forever() -> int:
        await anyio.sleep(3600)
        return 200

    with anyio.move_on_after(0.1):
        await serve(core, forever)
    late = await serve(core, forever, [("x-request-timeout", "1")])
    assert isinstance(late, Rejection)
    assert late.status == 504
    assert breaker.state is CircuitState.CLOSED
    assert breaker.failure_count == 2
    assert await serve(core, answering(503, calls)) == 503
    assert breaker.opened
    refused = await serve(core, answering(200, calls))
    assert isinstance(refused, Rejection)
    assert refused.status == 503
    assert header(refused, "retry-after") == "30"
    clock.now += 12.25
    assert header(await serve(core, answering(200, calls)), "retry-after") == "18"
    assert "x-do-not-retry" not in {name for name, _ in refused.headers}
    assert len(calls) == 7  # refused requests never reached the handler
    clock.now += 18.0
    assert await serve(core, answering(200, calls)) == 200  # the probe
    assert breaker.state is CircuitState.CLOSED


async def test_async_breaker_listeners_are_told_by_the_request_that_moved_it() -> None:
    """An async state listener has heard of the opening when the failing request ends."""
    heard: list[CircuitState] = []

    async def listener(breaker: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
        heard.append(new)

    breaker = CircuitBreaker(failure_threshold=1, listeners=[listener], clock=Clock())
    core = ServerCore(guards=[breaker])
    assert await serve(core, answering(502)) == 502
    assert heard == [CircuitState.OPEN]


async def test_guards_run_in_order_after_admission_and_shedding() -> None:
    """Spent budgets and shed requests spend no token; a later refusal releases earlier permits."""
    limiter = RateLimiter((2, 60.0), clock=Clock())
    bulkhead = Bulkhead(1)
    breaker = CircuitBreaker(failure_threshold=1, clock=Clock())
    shedder = PriorityLoadShedder(max_in_flight=1)
    core = ServerCore(guards=[limiter, bulkhead, breaker], load_shedder=shedder)
    spent = await serve(core, answering(200), [("x-request-timeout", "0")])
    assert isinstance(spent, Rejection)
    assert spent.status == 504
    release = anyio.Event()

    async def blocked() -> int:
        await release.wait()
        return 200

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(serve, core, blocked)
        await anyio.sleep(0.1)
        shed = await serve(core, answering(200))
        assert isinstance(shed, Rejection)
        assert shed.status == 503
        assert core.stats.shed == 1
        assert core.stats.refused == 0
        release.set()
    assert limiter.available() == 1.0  # only the request that ran took a token
    assert await serve(core, answering(500)) == 500  # opens the breaker
    refused = await serve(core, answering(200))
    assert isinstance(refused, Rejection)
    assert refused.status == 429
    assert bulkhead.active == 0
    assert shedder.in_flight == 0


async def test_guard_refusals_reach_the_observer_as_unhandled() -> None:
    """A refusal is observed with its status and kind, and never counted as started."""
    outcomes: list[ServerOutcome] = []
    started: list[Admission] = []

    class Observer:
        def __call__(self, outcome: ServerOutcome) -> None:
            outcomes.append(outcome)

        def request_started(self, admission: Admission) -> None:
            started.append(admission)

    breaker = CircuitBreaker(failure_threshold=1, clock=Clock())
    limiter = RateLimiter((2, 60.0), clock=Clock())
    core = ServerCore(guards=[limiter, breaker], observer=Observer())
    await serve(core, answering(500))
    await serve(core, answering(200))
    await serve(core, answering(200))
    assert [(o.status, o.outcome, o.handled) for o in outcomes] == [
        (500, ServerOutcomeKind.OK, True),
        (503, ServerOutcomeKind.REFUSED, False),
        (429, ServerOutcomeKind.RATE_LIMITED, False),
    ]
    assert len(started) == 1


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"guards": [object()]}, "guards"),
        ({"guards": "limiter"}, "guards"),
        ({"guards": [Bulkhead(1)], "client_key": "peer"}, "client_key"),
        ({"forwarded_header": " "}, "forwarded_header"),
    ],
)
def test_guard_options_are_checked_at_construction(options: dict[str, Any], name: str) -> None:
    """A bad guards/client_key/forwarded_header is a ConfigError naming the parameter."""
    with pytest.raises(ConfigError, match=name):
        ServerCore(**options)
