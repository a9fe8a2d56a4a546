"""The sequential strategy: what is retried, when, and when it stops."""

from __future__ import annotations

import itertools

import pytest

import aio_client as ac
from aio_client._retry_after import format_http_date
from aio_client.transports import MemoryTransport

from .helpers import Script, client_for

OK = ac.Response(200, content=b"ok")
NO_DELAY = ac.constant_delays(0.0)


def gaps(script: Script) -> list[float]:
    """Seconds between successive arrivals."""
    times = script.arrivals
    return [round(b - a, 3) for a, b in itertools.pairwise(times)]


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429])
async def test_retryable_statuses_are_retried(status: int) -> None:
    """5xx, 408 and 429 are retried until a success."""
    script = Script([ac.Response(status), OK])
    async with client_for(script, strategy=ac.sequential_strategy(3, NO_DELAY)) as client:
        resp = await client.request(ac.get("a"))
    assert (resp.status, resp.attempt, len(script.requests)) == (200, 2, 2)


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422])
async def test_other_4xx_are_final(status: int) -> None:
    """Other 4xx are returned at once, not retried."""
    script = Script([ac.Response(status)])
    async with client_for(script, strategy=ac.sequential_strategy(3, NO_DELAY)) as client:
        resp = await client.request(ac.get("a"))
    assert resp.status == status
    assert len(script.requests) == 1


async def test_do_not_retry_header_is_final() -> None:
    """A 503 carrying X-Do-Not-Retry is returned without a retry."""
    script = Script([ac.Response(503, ac.Headers({"X-Do-Not-Retry": "1"})), OK])
    async with client_for(script, strategy=ac.sequential_strategy(3, NO_DELAY)) as client:
        resp = await client.request(ac.get("a"))
    assert resp.status == 503
    assert len(script.requests) == 1


async def test_last_response_returned_when_attempts_run_out() -> None:
    """After the last attempt a final 5xx response is returned, not raised."""
    script = Script([ac.Response(500)])
    async with client_for(script, strategy=ac.sequential_strategy(3, NO_DELAY)) as client:
        resp = await client.request(ac.get("a"))
    assert (resp.status, resp.attempt) == (500, 3)
    assert [r.headers["x-request-attempt"] for r in script.requests] == ["1", "2", "3"]


async def test_delays_are_waited_between_attempts() -> None:
    """The delay provider's delays separate the attempts."""
    script = Script([ac.Response(500)])
    strategy = ac.sequential_strategy(3, ac.linear_delays(0.1, 0.2))
    async with client_for(script, strategy=strategy) as client:
        await client.request(ac.get("a"))
    assert gaps(script) == [0.1, 0.3]


async def test_retries_carry_smaller_budgets() -> None:
    """Each retry's X-Request-Timeout is what is left of the call's budget."""
    script = Script([ac.Response(500)])
    strategy = ac.sequential_strategy(3, ac.constant_delays(0.25))
    async with client_for(script, strategy=strategy, timeout=2.0) as client:
        await client.request(ac.get("a"))
    budgets = [float(r.headers["x-request-timeout"]) for r in script.requests]
    assert budgets == [2.0, 1.75, 1.5]


@pytest.mark.parametrize("header", ["2", "date"])
async def test_retry_after_is_honoured(header: str) -> None:
    """Retry-After (seconds or HTTP date) lengthens the wait before the retry."""
    value = header
    if header == "date":
        import time

        value = format_http_date(time.time() + 3)
    script = Script([ac.Response(503, ac.Headers({"Retry-After": value})), OK])
    async with client_for(script, strategy=ac.sequential_strategy(2, NO_DELAY)) as client:
        resp = await client.request(ac.get("a"))
    assert resp.status == 200
    assert gaps(script)[0] == pytest.approx(2.0 if header == "2" else 3.0, abs=1.01)
    assert gaps(script)[0] >= 1.9


async def test_retry_after_longer_than_allowed_ends_the_call() -> None:
    """A Retry-After beyond max_retry_after returns the response instead of waiting."""
    script = Script([ac.Response(503, ac.Headers({"Retry-After": "120"})), OK])
    strategy = ac.sequential_strategy(3, NO_DELAY, max_retry_after=30.0)
    async with client_for(script, strategy=strategy) as client:
        resp = await client.request(ac.get("a"))
    assert resp.status == 503
    assert len(script.requests) == 1


async def test_stops_when_delay_leaves_no_room() -> None:
    """No retry when the next delay would not leave time for an attempt."""
    script = Script([ac.Response(500), OK])
    strategy = ac.sequential_strategy(3, ac.constant_delays(0.9))
    async with client_for(script, strategy=strategy, timeout=0.9) as client:
        resp = await client.request(ac.get("a"))
    assert resp.status == 500
    assert len(script.requests) == 1


async def test_split_budget_lets_a_later_attempt_succeed() -> None:
    """With the budget split, a hung first attempt is cut at its share and a retry wins."""
    script = Script([10.0, OK])
    strategy = ac.sequential_strategy(
        3, NO_DELAY, attempt_timeout=ac.split_deadline_between_attempts
    )
    async with client_for(script, strategy=strategy, timeout=3.0) as client:
        resp = await client.request(ac.get("a"))
    assert (resp.status, resp.attempt) == (200, 2)
    assert gaps(script) == [1.0]
    assert [r.headers["x-request-timeout"] for r in script.requests] == ["1.000", "1.000"]


async def test_pass_through_lets_a_hung_attempt_use_everything() -> None:
    """With pass-through, a hung attempt consumes the whole budget: deadline error."""
    script = Script([10.0, OK])
    async with client_for(script, strategy=ac.sequential_strategy(3, NO_DELAY)) as client:
        with pytest.raises(ac.DeadlineExceededError) as info:
            await client.request(ac.get("a"), timeout=3.0)
    assert len(script.requests) == 1
    assert len(info.value.attempts) == 1


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_non_idempotent_methods_get_one_attempt(method: str) -> None:
    """POST and PATCH are not retried by default."""
    script = Script([ac.Response(503), OK])
    async with client_for(script, strategy=ac.sequential_strategy(3, NO_DELAY)) as client:
        resp = await client.request(ac.request(method, "a"))
    assert resp.status == 503
    assert len(script.requests) == 1


async def test_opt_in_makes_post_retryable() -> None:
    """idempotent=True or an Idempotency-Key header lets a POST be retried."""
    script = Script([ac.Response(503), OK, ac.Response(503), OK])
    async with client_for(script, strategy=ac.sequential_strategy(3, NO_DELAY)) as client:
        first = await client.request(ac.post("a"), idempotent=True)
        second = await client.request(ac.post("a", headers={"Idempotency-Key": "k1"}))
    assert (first.status, second.status) == (200, 200)
    assert len(script.requests) == 4


async def test_idempotent_false_forbids_retrying_get() -> None:
    """idempotent=False gives even a GET one attempt."""
    script = Script([ac.Response(503), OK])
    async with client_for(script, strategy=ac.sequential_strategy(3, NO_DELAY)) as client:
        resp = await client.request(ac.get("a"), idempotent=False)
    assert resp.status == 503


async def test_unsent_post_is_retried_once() -> None:
    """A POST whose connection failed before sending is retried exactly once."""
    script = Script([ac.ConnectError("refused")])
    async with client_for(script, strategy=ac.sequential_strategy(3, NO_DELAY)) as client:
        with pytest.raises(ac.ConnectError) as info:
            await client.request(ac.post("a"))
    assert len(script.requests) == 2
    assert info.value.may_have_reached_server is False


async def test_maybe_sent_post_is_not_retried() -> None:
    """A POST whose connection broke after sending is not repeated."""
    script = Script([ac.NetworkError("reset"), OK])
    async with client_for(script, strategy=ac.sequential_strategy(3, NO_DELAY)) as client:
        with pytest.raises(ac.NetworkError):
            await client.request(ac.post("a"))
    assert len(script.requests) == 1


async def test_empty_budget_stops_retries() -> None:
    """With the retry budget spent, the call returns its last outcome and counts it."""
    budget = ac.RetryBudget(ratio=0.0, min_per_second=0.1, ttl=10.0)  # one retry in all
    script = Script([ac.Response(500)])
    async with client_for(
        script, strategy=ac.sequential_strategy(5, NO_DELAY), budget=budget
    ) as client:
        first = await client.request(ac.get("a"))
        second = await client.request(ac.get("a"))
    assert (first.attempt, second.attempt) == (2, 1)
    assert budget.exhausted_count == 2


def test_bad_strategy_settings_rejected() -> None:
    """attempts outside 1..100 and bad delays are ConfigErrors."""
    for bad in (0, 101, 2.5, True):
        with pytest.raises(ac.ConfigError, match="attempts"):
            ac.sequential_strategy(bad)  # type: ignore[arg-type]
    with pytest.raises(ac.ConfigError, match="delays"):
        ac.sequential_strategy(3, 0.5)  # type: ignore[arg-type]
    with pytest.raises(ac.ConfigError, match="max_retry_after"):
        ac.sequential_strategy(3, max_retry_after=-1)


async def test_single_attempt_strategy_never_retries() -> None:
    """single_attempt_strategy sends one attempt even for a retryable outcome."""
    script = Script([ac.Response(503), OK])
    async with client_for(script, strategy=ac.single_attempt_strategy()) as client:
        resp = await client.request(ac.get("a"))
    assert resp.status == 503
    assert len(script.requests) == 1


async def test_open_breaker_moves_retry_to_another_endpoint() -> None:
    """A breaker's refusal sends the retry to an endpoint that has not refused."""
    script = Script([ac.CircuitOpenError("open", retry_after=3.0), OK])
    endpoints = ["http://a", "http://b"]
    async with ac.Client(
        MemoryTransport(script), lambda: endpoints, strategy=ac.sequential_strategy(3, NO_DELAY)
    ) as client:
        resp = await client.request(ac.get("x"))
    assert resp.status == 200
    assert [r.url for r in script.requests] == ["http://a/x", "http://b/x"]


async def test_open_breaker_on_the_only_endpoint_is_final() -> None:
    """With every endpoint refused by its breaker, the refusal is raised at once."""
    script = Script([ac.CircuitOpenError("open", retry_after=3.0), OK])
    async with client_for(script, strategy=ac.sequential_strategy(3, NO_DELAY)) as client:
        with pytest.raises(ac.CircuitOpenError) as info:
            await client.request(ac.get("x"))
    assert len(script.requests) == 1
    assert info.value.retry_after == 3.0
    assert info.value.may_have_reached_server is False
