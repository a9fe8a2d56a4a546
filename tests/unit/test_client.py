"""Client: deadline and priority resolution, propagation headers, stages, endpoints."""

from __future__ import annotations

import asyncio

import anyio
import pytest

import aio_client as ac
from aio_client.transports import MemoryTransport

from .helpers import Script, client_for

OK = ac.Response(200, content=b"ok")


async def test_await_and_async_with_both_work() -> None:
    """request() is awaitable and an async context manager yielding the same response."""
    script = Script([OK])
    async with client_for(script) as client:
        resp = await client.request(ac.get("a"))
        async with client.request(ac.get("a")) as same:
            assert same.content == resp.content == b"ok"
    assert resp.url == "http://svc/a"
    assert resp.attempt == 1


async def test_propagation_headers_are_stamped() -> None:
    """Each attempt carries the remaining budget, the priority and the attempt number."""
    script = Script([OK])
    async with client_for(script, timeout=2.5, priority="high") as client:
        await client.request(ac.get("a", headers={"X-Request-Timeout": "999"}))
    headers = script.requests[0].headers
    assert headers["x-request-timeout"] == "2.500"
    assert headers["x-request-priority"] == "high"
    assert headers["x-request-attempt"] == "1"
    assert headers.get_list("x-request-timeout") == ["2.500"]


async def test_effective_deadline_is_the_nearest() -> None:
    """Explicit, inherited and default budgets: the nearest wins; longer never extends."""
    script = Script([OK])
    async with client_for(script, timeout=5.0) as client:
        await client.request(ac.get("a"), timeout=1.0)
        with ac.ambient(timeout=0.5, priority=ac.Priority.LOW):
            await client.request(ac.get("a"), timeout=30.0)
            await client.request(ac.get("a"), deadline=ac.Deadline.from_timeout(60))
        await client.request(ac.get("a"), timeout=60.0)
    budgets = [r.headers["x-request-timeout"] for r in script.requests]
    assert budgets == ["1.000", "0.500", "0.500", "5.000"]
    assert [r.headers["x-request-priority"] for r in script.requests][1] == "low"


async def test_explicit_priority_beats_inherited() -> None:
    """A call's own priority wins over the ambient one."""
    script = Script([OK])
    async with client_for(script) as client:
        with ac.ambient(priority="low"):
            await client.request(ac.get("a"), priority=ac.Priority.HIGH)
    assert script.requests[0].headers["x-request-priority"] == "high"


async def test_nothing_sent_below_low_timeout() -> None:
    """With less than the threshold left, the call fails at once and sends nothing."""
    script = Script([OK])
    async with client_for(script) as client:
        with ac.ambient(timeout=0.004), pytest.raises(ac.DeadlineExceededError) as info:
            await client.request(ac.get("a"))
    assert script.requests == []
    assert info.value.may_have_reached_server is False
    assert isinstance(info.value, TimeoutError)


async def test_hanging_server_hits_the_deadline_and_is_cancelled() -> None:
    """A handler that never answers is cancelled when the call's deadline passes."""
    cancelled = anyio.Event()

    async def hang(request: ac.Request) -> ac.Response:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()
        raise AssertionError("unreachable")

    async with client_for(hang) as client:
        start = anyio.current_time()
        with pytest.raises(ac.DeadlineExceededError) as info:
            await client.request(ac.get("a"), timeout=0.3)
    assert anyio.current_time() - start == pytest.approx(0.3, abs=0.01)
    assert cancelled.is_set()
    assert [a.error for a in info.value.attempts] == ["CancelledError"]
    assert info.value.may_have_reached_server is True


async def test_caller_cancellation_cancels_the_attempt() -> None:
    """Cancelling the caller cancels the in-flight attempt; nothing keeps running."""
    started = anyio.Event()
    finished = anyio.Event()

    async def slow(request: ac.Request) -> ac.Response:
        started.set()
        try:
            await anyio.sleep(10)
        finally:
            finished.set()
        return OK

    async with client_for(slow) as client:
        with anyio.move_on_after(1.0) as scope:
            await client.request(ac.get("a"))
        assert scope.cancelled_caught
    assert started.is_set()
    assert finished.is_set()


async def test_transport_error_raised_with_history() -> None:
    """After the last attempt a transport error is raised, carrying every attempt."""
    script = Script([ac.NetworkError("reset")])
    strategy = ac.sequential_strategy(3, ac.constant_delays(0.0))
    async with client_for(script, strategy=strategy) as client:
        with pytest.raises(ac.NetworkError) as info:
            await client.request(ac.get("a"))
    assert [a.number for a in info.value.attempts] == [1, 2, 3]
    assert [a.kind for a in info.value.attempts] == ["first", "retry", "retry"]
    assert all(a.error == "NetworkError" for a in info.value.attempts)
    assert isinstance(info.value, ConnectionError)


async def test_endpoint_provider_rotates_attempts() -> None:
    """An async endpoint provider's endpoints are used in turn by successive attempts."""
    script = Script([ac.Response(503), OK])

    async def discover() -> list[str]:
        return ["http://a:1/", "http://b:2/base"]

    strategy = ac.sequential_strategy(2, ac.constant_delays(0.0))
    async with ac.Client(MemoryTransport(script), discover, strategy=strategy) as client:
        resp = await client.request(ac.get("x"))
    assert [r.url for r in script.requests] == ["http://a:1/x", "http://b:2/base/x"]
    assert resp.attempt == 2


async def test_stages_run_in_order_once_per_call_and_per_attempt() -> None:
    """Call stages run once per call, attempt stages once per attempt, first outermost."""
    events: list[str] = []

    def stage(name: str) -> ac.Stage:
        async def run(request: ac.Request, call_next: ac.Handler) -> ac.Response:
            events.append(f"{name}>")
            resp = await call_next(request)
            events.append(f"<{name}")
            return resp

        return run

    script = Script([ac.Response(500), OK])
    async with client_for(
        script,
        strategy=ac.sequential_strategy(2, ac.constant_delays(0.0)),
        stages=[stage("c1"), stage("c2")],
        attempt_stages=[stage("a")],
    ) as client:
        await client.request(ac.get("x"))
    assert events == ["c1>", "c2>", "a>", "<a", "a>", "<a", "<c2", "<c1"]


async def test_call_stage_may_derive_the_request() -> None:
    """A call stage's derived request is what the attempts send."""

    async def add_header(request: ac.Request, call_next: ac.Handler) -> ac.Response:
        headers = request.headers.replace({"x-tenant": "t1"})
        return await call_next(
            ac.Request(request.method, request.url, headers, route=request.route)
        )

    script = Script([OK])
    async with client_for(script, stages=[add_header]) as client:
        await client.request(ac.get("x"))
    assert script.requests[0].headers["x-tenant"] == "t1"


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"timeout": -1.0}, "timeout"),
        ({"timeout": 0.0}, "timeout"),
        ({"priority": "urgent"}, "priority"),
        ({"low_timeout": float("nan")}, "low_timeout"),
        ({"budget": 3}, "budget"),
        ({"strategy": object()}, "strategy"),
        ({"timeout": 1.0, "low_timeout": 5.0}, "low_timeout"),
        ({"timeout": 1.0, "low_timeout": 1.0}, "low_timeout"),
    ],
)
def test_bad_client_settings_rejected(options: dict[str, object], fragment: str) -> None:
    """Bad settings raise ConfigError naming the parameter."""
    with pytest.raises(ac.ConfigError, match=fragment):
        ac.Client(MemoryTransport(Script([OK])), "http://svc", **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("endpoint", ["svc", "ftp://svc", "http://", "http://svc?x=1", 42])
def test_bad_endpoints_rejected(endpoint: object) -> None:
    """An endpoint must be an absolute http(s) URL without query."""
    with pytest.raises(ac.ConfigError, match="endpoint"):
        ac.Client(MemoryTransport(Script([OK])), endpoint)  # type: ignore[arg-type]


async def test_bad_call_arguments_rejected() -> None:
    """A negative per-call timeout or a non-Request is rejected before sending."""
    script = Script([OK])
    async with client_for(script) as client:
        with pytest.raises(ac.ConfigError, match="timeout"):
            await client.request(ac.get("a"), timeout=-2)
        with pytest.raises(ac.InvalidRequestError):
            await client.request("a")  # type: ignore[arg-type]
        with pytest.raises(ac.ConfigError, match="priority"):
            await client.request(ac.get("a"), priority="urgent")
        with pytest.raises(ac.ConfigError, match="strategy"):
            await client.request(ac.get("a"), strategy=object())  # type: ignore[arg-type]
        with pytest.raises(ac.ConfigError, match="strategy"):
            async with client.stream(ac.get("a"), strategy=object()):  # type: ignore[arg-type]
                pass  # pragma: no cover
        with pytest.raises(ac.ConfigError, match="idempotent"):
            await client.request(ac.get("a"), idempotent="yes")  # type: ignore[arg-type]
    assert script.requests == []


@pytest.mark.parametrize("found", [None, 5, object()])
async def test_an_endpoint_provider_returning_no_urls_is_a_config_error(found: object) -> None:
    """A provider must return a URL or an iterable of them; anything else says so."""
    script = Script([OK])
    async with ac.Client(MemoryTransport(script), lambda: found) as client:  # type: ignore[arg-type,return-value]
        with pytest.raises(ac.ConfigError, match="endpoint provider must return"):
            await client.get("a")
    assert script.requests == []


async def test_closed_client_refuses_requests() -> None:
    """A closed client raises instead of sending."""
    client = client_for(Script([OK]))
    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await client.request(ac.get("a"))


async def test_memory_transport_runs_asgi_apps() -> None:
    """MemoryTransport serves an ASGI app: path, query, headers and body arrive."""
    seen: dict[str, object] = {}

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        message = await receive()  # type: ignore[operator]
        seen.update(path=scope["path"], query=scope["query_string"], body=message["body"])
        seen["headers"] = dict(scope["headers"])  # type: ignore[call-overload]
        await send({"type": "http.response.start", "status": 201, "headers": [(b"X-Y", b"z")]})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"made"})  # type: ignore[operator]

    async with ac.Client(MemoryTransport(app), "http://svc") as client:  # type: ignore[arg-type]
        resp = await client.request(
            ac.post("items/{id}", path_params={"id": "a b"}, query={"q": 1}, content=b"B")
        )
    assert (resp.status, resp.content, resp.headers["x-y"]) == (201, b"made", "z")
    assert seen["path"] == "/items/a b"
    assert seen["query"] == b"q=1"
    assert seen["body"] == b"B"
    assert b"x-request-timeout" in seen["headers"]  # type: ignore[operator]


async def test_an_attempt_stage_returning_a_non_response_is_a_clear_error() -> None:
    """A stage that returns something other than a Response fails loudly, naming it."""

    async def broken(request: ac.Request, call_next: object) -> ac.Response:
        return "not a response"  # type: ignore[return-value]

    async with client_for(Script([OK]), attempt_stages=[broken]) as client:
        with pytest.raises(TypeError, match="'not a response'; expected a Response"):
            await client.request(ac.get("a"))


async def test_verb_shorthands_build_the_request_and_pass_the_call_options() -> None:
    """client.get/post/... take the builder's options and request()'s, and work both ways."""
    script = Script([ac.Response(503), OK])
    async with client_for(script, timeout=5.0) as client:
        got = await client.get("users/{id}", path_params={"id": "a/b"}, query={"q": 1}, timeout=1.0)
        async with client.post("items", json={"n": 1}, idempotent=True, priority="high") as posted:
            assert posted.attempt == 1
        for send in (client.head, client.options, client.delete):
            await send("x", headers={"X-Trace": "t"})
        for send_body in (client.put, client.patch):
            await send_body("x", content=b"raw")
    assert got.attempt == 2  # the 503 was retried: GET is idempotent
    first, _, post = script.requests[:3]
    assert first.url == "http://svc/users/a%2Fb?q=1"
    assert first.headers["x-request-timeout"] == "1.000"
    assert (post.method, post.content, post.headers["content-type"]) == (
        "POST",
        b'{"n":1}',
        "application/json",
    )
    assert post.headers["x-request-priority"] == "high"
    methods = [r.method for r in script.requests[3:]]
    assert methods == ["HEAD", "OPTIONS", "DELETE", "PUT", "PATCH"]
    assert script.requests[3].headers["x-trace"] == "t"
    assert script.requests[-1].content == b"raw"


async def test_verb_shorthands_reject_unknown_options_by_name() -> None:
    """A misspelt option is a TypeError naming it and the ones allowed, before anything is sent."""
    script = Script([OK])
    async with client_for(script) as client:
        with pytest.raises(
            TypeError, match="get\\(\\) got an unexpected keyword argument 'timout'"
        ):
            client.get("x", timout=1.0)  # type: ignore[call-arg]
    assert script.requests == []


async def test_a_call_can_be_made_a_task() -> None:
    """``asyncio.create_task(client.get(...))`` and a TaskGroup take a call as they take
    any coroutine, and cancelling the task cancels the call."""
    script = Script([OK])
    async with client_for(script) as client:
        task = asyncio.create_task(client.get("a"))
        assert (await task).status == 200
        async with asyncio.TaskGroup() as group:
            grouped = group.create_task(client.post("b", content=b"x"))
        assert grouped.result().status == 200

    async def hang(request: ac.Request) -> ac.Response:
        await anyio.sleep(10)
        return OK  # pragma: no cover

    async with client_for(hang) as client:
        hung = asyncio.create_task(client.get("slow"))
        await anyio.sleep(0.05)
        hung.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hung
