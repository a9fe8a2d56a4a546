"""Requests waiting for a connection in a full pool, against a real server."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import pytest
from aiohttp import web

import aio_client as ac
from aio_client.transports import AiohttpTransport, HttpxTransport, Transport

from .servers import serve_aiohttp


@dataclass
class Seen:
    """What the server received: (path, X-Request-Attempt, X-Request-Timeout) per request."""

    url: str = ""
    requests: list[tuple[str, str, str]] = field(default_factory=list)


@pytest.fixture
async def server() -> AsyncIterator[Seen]:
    seen = Seen()

    async def handle(request: web.Request) -> web.StreamResponse:
        attempt = request.headers.get("X-Request-Attempt", "")
        seen.requests.append((request.path, attempt, request.headers.get("X-Request-Timeout", "")))
        if request.path == "/slow":
            await asyncio.sleep(float(request.query.get("seconds", "0.4")))
        if request.path == "/flaky" and attempt == "1":
            return web.Response(status=503, text="busy")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{name}", handle)
    async with serve_aiohttp(app) as url:
        seen.url = url
        yield seen


def pool_of(kind: str, limit: int) -> Transport:
    return AiohttpTransport(limit=limit) if kind == "aiohttp" else HttpxTransport(limit=limit)


@pytest.mark.parametrize("kind", ["aiohttp", "httpx"])
async def test_a_request_that_waited_for_a_connection_carries_the_budget_left(
    server: Seen, kind: str
) -> None:
    """X-Request-Timeout is what is left when the request is sent, not when it began
    waiting: the server never gets more time than the caller has."""
    async with (
        ac.Client(pool_of(kind, 1), server.url, timeout=1.0) as client,
        anyio.create_task_group() as group,
    ):
        group.start_soon(client.get, "slow")  # holds the one connection 0.4 s
        await anyio.sleep(0.05)
        await client.get("fast")
    sent = {path: float(timeout) for path, _, timeout in server.requests}
    assert sent["/slow"] > 0.9
    # About 0.65 s were left when the connection came free (1.0 - 0.35 waited).
    assert sent["/fast"] < 0.7


@pytest.mark.parametrize("kind", ["aiohttp", "httpx"])
async def test_requests_waiting_for_a_connection_are_not_sent_after_the_client_closes(
    server: Seen, kind: str
) -> None:
    """Closing the client while calls wait for a connection: they end with ConnectError,
    not sent, and nothing is reopened behind the caller's back (no unclosed session)."""
    client = ac.Client(
        pool_of(kind, 1), server.url, timeout=2.0, strategy=ac.single_attempt_strategy()
    )
    outcomes: list[BaseException | int] = []

    async def one(path: str) -> None:
        try:
            outcomes.append((await client.get(path)).status)
        except ac.AioClientError as exc:
            outcomes.append(exc)

    with anyio.fail_after(2.0):
        async with anyio.create_task_group() as group:
            group.start_soon(one, "slow")
            await anyio.sleep(0.05)
            group.start_soon(one, "fast")
            group.start_soon(one, "fast")
            await anyio.sleep(0.05)
            await client.aclose()
    waited = [outcome for outcome in outcomes[-2:] if isinstance(outcome, ac.ConnectError)]
    assert len(waited) == 2
    assert all(error.may_have_reached_server is False for error in waited)
    assert [path for path, _, _ in server.requests] == ["/slow"]


async def test_a_streamed_retry_does_not_wait_for_its_own_first_answer(server: Seen) -> None:
    """One connection: a streamed call's 503 (kept, should the retry fail too) does not
    hold the connection its retry needs once aiohttp has it back."""
    strategy = ac.sequential_strategy(attempts=2, delays=ac.constant_delays(0.01))
    async with ac.Client(pool_of("aiohttp", 1), server.url, timeout=1.0) as client:
        with anyio.fail_after(0.8):
            async with client.stream(ac.get("flaky"), strategy=strategy) as response:
                body = b"".join([piece async for piece in response.aiter_bytes()])
    assert (response.status, response.attempt, body) == (200, 2, b"ok")


@pytest.mark.parametrize("kind", ["aiohttp", "httpx"])
async def test_a_wait_for_a_connection_never_raises_a_budget_a_stage_lowered(
    server: Seen, kind: str
) -> None:
    """An attempt stage that gives the callee less time than the call has: after a wait
    for a connection, the callee gets that less the wait, never the call's own budget."""

    async def cap_for_callee(
        request: ac.Request, call_next: Callable[[ac.Request], Awaitable[ac.Response]]
    ) -> ac.Response:
        headers = request.headers.replace({"X-Request-Timeout": "0.500"})
        return await call_next(dataclasses.replace(request, headers=headers))

    async with (
        ac.Client(
            pool_of(kind, 1), server.url, timeout=5.0, attempt_stages=[cap_for_callee]
        ) as client,
        anyio.create_task_group() as group,
    ):
        group.start_soon(functools.partial(client.get, "slow", query={"seconds": 0.2}))
        await anyio.sleep(0.05)
        await client.get("fast")
    sent = {path: float(timeout) for path, _, timeout in server.requests}
    assert sent["/slow"] == 0.5
    assert sent["/fast"] <= 0.5 - 0.1


@pytest.mark.parametrize("kind", ["aiohttp", "httpx"])
async def test_a_call_whose_deadline_passes_while_it_waits_was_not_sent(
    server: Seen, kind: str
) -> None:
    """A POST whose deadline passes while it waits for a connection never left: its
    DeadlineExceededError says so, and the caller may send it again."""
    async with (
        ac.Client(pool_of(kind, 1), server.url, timeout=5.0) as client,
        anyio.create_task_group() as group,
    ):
        group.start_soon(client.get, "slow")  # holds the one connection 0.4 s
        await anyio.sleep(0.05)
        with pytest.raises(ac.DeadlineExceededError) as caught:
            await client.post("fast", json={"n": 1}, timeout=0.2)
    assert caught.value.may_have_reached_server is False
    assert [path for path, _, _ in server.requests] == ["/slow"]
