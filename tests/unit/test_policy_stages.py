"""Policies as client stages, inside a real Client over MemoryTransport."""

from __future__ import annotations

import anyio
import pytest

import aio_client as ac
from aio_client import (
    Bulkhead,
    BulkheadFullError,
    CircuitBreaker,
    CircuitState,
    Fallback,
    RateLimitedError,
    RateLimiter,
    Timeout,
    retry,
)
from aio_client.policies import CircuitBreakerStage, as_stage, endpoint_key
from aio_client.transports import MemoryTransport

A, B = "http://a:8080", "http://b:8080"


class Endpoints:
    """A handler serving two endpoints, each with its own behaviour."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {A: 0, B: 0}
        self.status: dict[str, int] = {A: 200, B: 200}
        self.error: dict[str, ac.AioClientError | None] = {A: None, B: None}
        self.delay: dict[str, float] = {A: 0.0, B: 0.0}

    async def __call__(self, request: ac.Request) -> ac.Response:
        origin = A if request.url.startswith(A) else B
        self.seen[origin] += 1
        if self.delay[origin]:
            await anyio.sleep(self.delay[origin])
        error = self.error[origin]
        if error is not None:
            raise error
        return ac.Response(self.status[origin], content=origin.encode())


def two_endpoint_client(
    handler: Endpoints, stage: CircuitBreakerStage, **options: object
) -> ac.Client:
    options.setdefault("strategy", ac.single_attempt_strategy())
    return ac.Client(
        MemoryTransport(handler),
        lambda: [A, B],
        attempt_stages=[stage],
        **options,  # type: ignore[arg-type]
    )


def breaker_stage(**options: object) -> CircuitBreakerStage:
    settings: dict[str, object] = {"failure_threshold": 2, "break_duration": 30.0}
    settings.update(options)
    return CircuitBreakerStage(CircuitBreaker(**settings))  # type: ignore[arg-type]


async def test_one_breaker_state_per_endpoint() -> None:
    """5xx from endpoint A opens A's breaker only; calls to A are refused unsent, B serves."""
    handler = Endpoints()
    handler.status[A] = 503
    stage = breaker_stage()
    async with two_endpoint_client(handler, stage) as client:
        statuses = [(await client.request(ac.get("x"))).status for _ in range(4)]
        assert statuses == [503, 200, 503, 200]  # calls alternate A, B, A, B
        with pytest.raises(ac.CircuitOpenError) as info:
            await client.request(ac.get("x"))  # to A
        assert (await client.request(ac.get("x"))).status == 200  # to B
    assert handler.seen == {A: 2, B: 3}
    assert info.value.retry_after == pytest.approx(30.0)
    assert info.value.may_have_reached_server is False
    assert info.value.attempts[0].may_have_reached_server is False
    breakers = stage.breakers
    assert set(breakers) == {"http://a:8080", "http://b:8080"}
    assert breakers["http://a:8080"].state is CircuitState.OPEN
    assert breakers["http://b:8080"].state is CircuitState.CLOSED
    assert breakers["http://a:8080"].name == "http://a:8080"


async def test_a_retry_goes_to_the_endpoint_whose_breaker_is_closed() -> None:
    """With A open, a call's first attempt is refused at once and the retry goes to B."""
    handler = Endpoints()
    stage = breaker_stage(failure_threshold=1)
    await _open(stage, A)
    strategy = ac.sequential_strategy(attempts=2, delays=ac.constant_delays(0.0))
    async with two_endpoint_client(handler, stage, strategy=strategy) as client:
        response = await client.request(ac.get("x"))
    assert response.content == A.replace("a:8080", "b:8080").encode()
    assert response.attempt == 2
    assert handler.seen == {A: 0, B: 1}


async def test_a_refusal_is_not_retried_against_the_same_endpoint() -> None:
    """With one endpoint and its breaker open, the call fails after one refused attempt."""
    handler = Endpoints()
    stage = breaker_stage(failure_threshold=1)
    await _open(stage, A)
    strategy = ac.sequential_strategy(attempts=3, delays=ac.constant_delays(0.0))
    client = ac.Client(MemoryTransport(handler), A, strategy=strategy, attempt_stages=[stage])
    async with client:
        with pytest.raises(ac.CircuitOpenError) as info:
            await client.request(ac.get("x"))
    assert len(info.value.attempts) == 1
    assert handler.seen == {A: 0, B: 0}


async def test_a_hedge_goes_to_the_other_endpoint_when_one_is_open() -> None:
    """Hedged: the refusal from A's open breaker starts the hedge to B at once."""
    handler = Endpoints()
    stage = breaker_stage(failure_threshold=1)
    await _open(stage, A)
    strategy = ac.parallel_strategy(attempts=2, delays=1.0)
    async with two_endpoint_client(handler, stage, strategy=strategy) as client:
        start = anyio.current_time()
        response = await client.request(ac.get("x"))
    assert anyio.current_time() - start < 0.5  # no waiting for the hedge delay
    assert response.content == B.encode()
    assert handler.seen == {A: 0, B: 1}


async def test_lost_hedges_are_neither_success_nor_failure() -> None:
    """A slow endpoint's attempts, cancelled because a hedge won, do not count as failures."""
    handler = Endpoints()
    handler.delay[A] = 5.0
    stage = breaker_stage(failure_threshold=1)
    strategy = ac.parallel_strategy(attempts=2, delays=0.1)
    async with two_endpoint_client(handler, stage, strategy=strategy) as client:
        for _ in range(3):
            await client.request(ac.get("x"))
    assert handler.seen[A] >= 1
    assert stage.breaker_for("http://a:8080").state is CircuitState.CLOSED


async def test_client_errors_are_not_failures() -> None:
    """4xx responses never open the breaker."""
    handler = Endpoints()
    handler.status[A] = handler.status[B] = 404
    stage = breaker_stage()
    async with two_endpoint_client(handler, stage) as client:
        for _ in range(10):
            assert (await client.request(ac.get("x"))).status == 404
    assert handler.seen == {A: 5, B: 5}
    assert all(b.state is CircuitState.CLOSED for b in stage.breakers.values())


async def test_transport_errors_are_failures() -> None:
    """Connection errors from the transport count toward opening."""
    handler = Endpoints()
    handler.error[A] = handler.error[B] = ac.ConnectError("refused")
    stage = breaker_stage()
    async with two_endpoint_client(handler, stage) as client:
        for _ in range(4):
            with pytest.raises(ac.ConnectError):
                await client.request(ac.get("x"))
        with pytest.raises(ac.CircuitOpenError):
            await client.request(ac.get("x"))
    assert handler.seen == {A: 2, B: 2}


async def test_attempt_deadline_is_a_failure_caller_cancellation_is_not() -> None:
    """An attempt cut off by its deadline counts; one abandoned by its caller does not."""
    handler = Endpoints()
    handler.delay[A] = handler.delay[B] = 10.0
    stage = CircuitBreakerStage(CircuitBreaker(failure_threshold=1), key=lambda request: "all")
    async with two_endpoint_client(handler, stage, timeout=30.0) as client:
        with anyio.move_on_after(1.0):
            await client.request(ac.get("x"))
        assert stage.breaker_for("all").state is CircuitState.CLOSED
        with pytest.raises(ac.DeadlineExceededError):
            await client.request(ac.get("x"), timeout=2.0)
        assert stage.breaker_for("all").state is CircuitState.OPEN


async def test_impatient_callers_do_not_open_the_breaker_for_everyone() -> None:
    """Deadlines shorter than min_deadline_budget say nothing about a healthy slow endpoint."""
    handler = Endpoints()
    handler.delay[A] = handler.delay[B] = 0.2  # healthy, answers in 200 ms
    stage = CircuitBreakerStage(CircuitBreaker(failure_threshold=5), key=lambda request: "all")
    async with two_endpoint_client(handler, stage, timeout=30.0) as client:
        for _ in range(10):
            with pytest.raises(ac.DeadlineExceededError):
                await client.request(ac.get("x"), timeout=0.1)
        assert stage.breaker_for("all").state is CircuitState.CLOSED
        response = await client.request(ac.get("x"), timeout=2.0)
    assert response.status == 200


async def test_timeouts_with_a_real_budget_still_open_the_breaker() -> None:
    """A hung endpoint given at least min_deadline_budget each time is still cut off."""
    handler = Endpoints()
    handler.delay[A] = handler.delay[B] = 60.0
    stage = CircuitBreakerStage(
        CircuitBreaker(failure_threshold=3, min_deadline_budget=0.5), key=lambda request: "all"
    )
    async with two_endpoint_client(handler, stage, timeout=30.0) as client:
        for _ in range(3):
            with pytest.raises(ac.DeadlineExceededError):
                await client.request(ac.get("x"), timeout=0.5)
        assert stage.breaker_for("all").state is CircuitState.OPEN
        with pytest.raises(ac.CircuitOpenError):
            await client.request(ac.get("x"), timeout=2.0)


async def test_a_transport_timeout_counts_by_the_same_rule() -> None:
    """A DeadlineExceededError raised by the transport counts only with a real budget."""
    handler = Endpoints()
    handler.error[A] = handler.error[B] = ac.DeadlineExceededError("read timed out")
    stage = CircuitBreakerStage(
        CircuitBreaker(failure_threshold=2, min_deadline_budget=1.0), key=lambda request: "all"
    )
    async with two_endpoint_client(handler, stage, timeout=30.0) as client:
        for _ in range(4):
            with pytest.raises(ac.DeadlineExceededError):
                await client.request(ac.get("x"), timeout=0.5)
        assert stage.breaker_for("all").state is CircuitState.CLOSED
        for _ in range(2):
            with pytest.raises(ac.DeadlineExceededError):
                await client.request(ac.get("x"), timeout=5.0)
        assert stage.breaker_for("all").state is CircuitState.OPEN


async def test_decorated_breaker_ignores_deadlines_of_impatient_callers() -> None:
    """As a decorator too, a DeadlineExceededError counts only when the caller gave it time."""
    breaker = CircuitBreaker(failure_threshold=1, min_deadline_budget=1.0)

    @breaker
    async def upstream() -> None:
        raise ac.DeadlineExceededError("upstream too slow for this caller")

    states: list[CircuitState] = []
    with ac.ambient(timeout=0.2), pytest.raises(ac.DeadlineExceededError):
        await upstream()
    states.append(breaker.state)
    with ac.ambient(timeout=3.0), pytest.raises(ac.DeadlineExceededError):
        await upstream()
    states.append(breaker.state)
    assert states == [CircuitState.CLOSED, CircuitState.OPEN]


def test_min_deadline_budget_is_validated() -> None:
    """A negative or non-numeric min_deadline_budget is a ConfigError naming it."""
    for bad in (-1.0, "1", float("nan")):
        with pytest.raises(ac.ConfigError, match="min_deadline_budget"):
            CircuitBreaker(min_deadline_budget=bad)  # type: ignore[arg-type]


async def test_template_listeners_hear_each_endpoint() -> None:
    """Listeners registered on the template are told of every endpoint's changes, by name."""
    heard: list[tuple[str, CircuitState]] = []

    async def listener(breaker: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
        heard.append((breaker.name, new))

    handler = Endpoints()
    handler.status[B] = 500
    stage = breaker_stage(failure_threshold=1, listeners=[listener])
    async with two_endpoint_client(handler, stage) as client:
        await client.request(ac.get("x"))
        await client.request(ac.get("x"))
    assert heard == [("http://b:8080", CircuitState.OPEN)]


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("http://svc/a/b?q=1", "http://svc:80"),
        ("https://svc/a", "https://svc:443"),
        ("HTTP://SVC:8080/a", "http://svc:8080"),
        ("http://user:pw@svc:81/", "http://svc:81"),
        ("http://[::1]:9000/x", "http://[::1]:9000"),
        ("relative/path", ""),
    ],
)
def test_endpoint_key_is_scheme_host_port(url: str, key: str) -> None:
    """The default key is the origin with an explicit port, lower-cased, without userinfo."""
    assert endpoint_key(ac.Request(method="GET", url=url)) == key


async def test_endpoint_states_are_bounded() -> None:
    """Beyond max_endpoints, the least recently used endpoint's state is dropped."""
    stage = CircuitBreakerStage(CircuitBreaker(), max_endpoints=2)
    first = stage.breaker_for("one")
    stage.breaker_for("two")
    stage.breaker_for("one")
    stage.breaker_for("three")
    assert set(stage.breakers) == {"one", "three"}
    assert stage.breaker_for("one") is first


async def test_bulkhead_stage_refuses_calls_over_capacity() -> None:
    """As a call stage, a full bulkhead refuses the call before the strategy runs."""
    gate = anyio.Event()
    seen = 0

    async def handler(request: ac.Request) -> ac.Response:
        nonlocal seen
        seen += 1
        await gate.wait()
        return ac.Response(200)

    client = ac.Client(MemoryTransport(handler), "http://svc", stages=[as_stage(Bulkhead(1))])

    async def first() -> None:
        await client.request(ac.get("x"))

    async with client, anyio.create_task_group() as tg:
        tg.start_soon(first)
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(BulkheadFullError):
            await client.request(ac.get("x"))
        gate.set()
    assert seen == 1


async def test_rate_limit_stage_keys_on_the_request() -> None:
    """A keyed limiter stage gives each tenant header its own bucket."""

    async def handler(request: ac.Request) -> ac.Response:
        return ac.Response(200)

    limiter = RateLimiter("1/minute", key=lambda request: request.headers.get("x-tenant"))
    client = ac.Client(MemoryTransport(handler), "http://svc", stages=[as_stage(limiter)])
    async with client:
        await client.request(ac.get("x", headers={"x-tenant": "a"}))
        await client.request(ac.get("x", headers={"x-tenant": "b"}))
        with pytest.raises(RateLimitedError) as info:
            await client.request(ac.get("x", headers={"x-tenant": "a"}))
    assert info.value.retry_after == pytest.approx(60.0)


async def test_timeout_stage_bounds_each_attempt_and_sets_its_deadline() -> None:
    """As an attempt stage, Timeout caps the attempt; the transport sees its deadline."""
    budgets: list[float] = []

    async def handler(request: ac.Request) -> ac.Response:
        deadline = ac.current_deadline()
        assert deadline is not None
        budgets.append(round(deadline.remaining(), 3))
        await anyio.sleep(2.0)
        return ac.Response(200)

    client = ac.Client(
        MemoryTransport(handler),
        "http://svc",
        strategy=ac.sequential_strategy(attempts=2, delays=ac.constant_delays(0.0)),
        attempt_stages=[as_stage(Timeout(0.5))],
    )
    async with client:
        start = anyio.current_time()
        with pytest.raises(ac.DeadlineExceededError) as info:
            await client.request(ac.get("x"))
    assert budgets == [0.5, 0.5]
    assert anyio.current_time() - start == pytest.approx(1.0)
    assert len(info.value.attempts) == 2


async def test_fallback_stage_answers_for_an_open_breaker() -> None:
    """Fallback outermost, breaker per attempt: an open breaker yields the substitute."""

    async def handler(request: ac.Request) -> ac.Response:
        return ac.Response(503)

    substitute = ac.Response(200, content=b"cached")
    client = ac.Client(
        MemoryTransport(handler),
        "http://svc",
        strategy=ac.single_attempt_strategy(),
        stages=[as_stage(Fallback(substitute, on=ac.CircuitOpenError))],
        attempt_stages=[as_stage(CircuitBreaker(failure_threshold=1))],
    )
    async with client:
        assert (await client.request(ac.get("x"))).status == 503
        assert (await client.request(ac.get("x"))).content == b"cached"


async def test_retry_stage_repeats_the_call() -> None:
    """As a call stage, retry repeats the whole call while it raises one of `on`."""
    failures = [ac.ConnectError("1"), ac.ConnectError("2")]

    async def handler(request: ac.Request) -> ac.Response:
        if failures:
            raise failures.pop(0)
        return ac.Response(200)

    policy = retry(on=ac.ConnectError, attempts=3, delays=ac.constant_delays(0.0))
    client = ac.Client(
        MemoryTransport(handler),
        "http://svc",
        strategy=ac.single_attempt_strategy(),
        stages=[as_stage(policy)],
    )
    async with client:
        assert (await client.request(ac.get("x"))).status == 200
    assert failures == []


def test_as_stage_adapts_policies_only() -> None:
    """A breaker becomes a per-endpoint stage; anything else that is not a policy is refused."""
    assert isinstance(as_stage(CircuitBreaker()), CircuitBreakerStage)
    with pytest.raises(ac.ConfigError, match="not a policy"):
        as_stage(object())  # type: ignore[arg-type]
    with pytest.raises(ac.ConfigError, match="breaker"):
        CircuitBreakerStage(object())  # type: ignore[arg-type]


async def _open(stage: CircuitBreakerStage, origin: str) -> None:
    breaker = stage.breaker_for(origin)

    async def down() -> None:
        raise ac.ConnectError("down")

    with pytest.raises(ac.ConnectError):
        await breaker.call(down)
    assert breaker.state is CircuitState.OPEN


async def test_client_circuit_breaker_setting_keeps_one_breaker_per_endpoint() -> None:
    """Client(circuit_breaker=...) opens the failing endpoint's breaker and fails over."""
    handler = Endpoints()
    handler.status[A] = 503
    breaker = CircuitBreaker(failure_threshold=1, break_duration=30.0)
    strategy = ac.sequential_strategy(attempts=2, delays=ac.constant_delays(0.0))
    async with ac.Client(
        MemoryTransport(handler), lambda: [A, B], strategy=strategy, circuit_breaker=breaker
    ) as client:
        first = await client.request(ac.get("x"))  # A: 503 (opens A), retry to B
        second = await client.request(ac.get("x"))  # starts at B
        third = await client.request(ac.get("x"))  # A refused unsent, retry to B
    assert [first.status, second.status, third.status] == [200, 200, 200]
    assert handler.seen == {A: 1, B: 3}
    with pytest.raises(ac.ConfigError, match="circuit_breaker"):
        ac.Client(MemoryTransport(handler), A, circuit_breaker=object())  # type: ignore[arg-type]


async def test_call_stage_timeout_shortens_the_propagated_budget() -> None:
    """A Timeout in stages= bounds the call and the budget each attempt announces."""
    seen: list[str] = []

    async def handler(request: ac.Request) -> ac.Response:
        seen.append(request.headers["x-request-timeout"])
        return ac.Response(200)

    async with ac.Client(
        MemoryTransport(handler), A, timeout=10.0, stages=[as_stage(Timeout(0.5))]
    ) as client:
        await client.request(ac.get("x"))
    assert seen == ["0.500"]
