"""Hypothesis-generated deadline/priority headers never cause a 500 or an exception."""

from __future__ import annotations

import math
from typing import Any

import anyio
from aiohttp import web
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st

import aio_client as ac
from aio_client.server import DeadlineMiddleware, aiohttp_middleware
from aio_client.server._core import Admission, Rejection, ServerCore
from tests.integration.servers import serve_aiohttp, serve_uvicorn

HEADER_NAMES = st.sampled_from(
    [
        "X-Request-Timeout",
        "x-request-timeout",
        "grpc-timeout",
        "x-envoy-expected-rq-timeout-ms",
        "X-Request-Priority",
        "x-other",
    ]
)

#: Values that look almost right as well as plain garbage.
HEADER_TEXT = st.one_of(
    st.text(max_size=40),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.from_regex(r"\A\s*-?\d{0,14}(\.\d{0,20})?([eE][-+]?\d{1,4})?\s*\Z"),
    st.from_regex(r"\A-?\d{0,10}[HMSmun]?\Z"),
    st.sampled_from(["high", "LOW", " normal ", "urgent", "", "NaN", "inf", "1e400", "0x10"]),
)


@settings(max_examples=400, deadline=None, database=None)
@given(st.lists(st.tuples(HEADER_NAMES, HEADER_TEXT), max_size=6))
def test_core_admit_never_raises_and_keeps_budgets_sane(headers: list[tuple[str, str]]) -> None:
    """admit() on any headers gives a bounded budget and a priority, or a 504 — never raises."""
    core = ServerCore(timeout=5.0, max_timeout=60.0, low_timeout=0.005)
    decision = core.admit(headers)
    if isinstance(decision, Rejection):
        assert decision.status == 504
        assert ("x-do-not-retry", "1") in decision.headers
        return
    assert isinstance(decision, Admission)
    assert 0.005 <= decision.budget <= 60.0
    assert math.isfinite(decision.budget)
    assert decision.priority in set(ac.Priority)
    assert not decision.token.cancelled
    named = [name.lower() for name, _ in headers if name.lower() != "x-other"]
    assert core.stats.malformed_headers <= len(named)


def _collect(strategy: st.SearchStrategy[bytes], count: int) -> list[bytes]:
    """Draw ``count`` values with Hypothesis (its edge cases first) for async use."""
    values: list[bytes] = []

    @settings(max_examples=count, deadline=None, database=None)
    @given(strategy)
    def draw(value: bytes) -> None:
        values.append(value)

    draw()
    return values


#: Raw header value bytes: anything but the CR/LF that would end the header.
RAW_VALUES = st.one_of(
    HEADER_TEXT.map(lambda text: text.encode("utf-8")),
    st.binary(max_size=40),
).map(lambda value: value.replace(b"\r", b"").replace(b"\n", b""))


async def _status(port: int, name: bytes, value: bytes) -> int:
    """Send one raw request with ``name: value`` and return the response status."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(
            b"GET /echo HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n"
            + name
            + b": "
            + value
            + b"\r\n\r\n"
        )
        received = b""
        with anyio.fail_after(5):
            while b"\r\n" not in received:
                chunk = await stream.receive()
                received += chunk
    return int(received.split(b" ", 2)[1])


_NAMES = [
    b"X-Request-Timeout",
    b"grpc-timeout",
    b"x-envoy-expected-rq-timeout-ms",
    b"X-Request-Priority",
]


async def test_uvicorn_fastapi_never_answers_500() -> None:
    """Fuzzed header bytes on real uvicorn: never 500, never an app exception."""
    app = FastAPI()
    app.add_middleware(DeadlineMiddleware, timeout=5.0)

    @app.get("/echo")
    async def echo() -> dict[str, Any]:
        deadline = ac.current_deadline()
        assert deadline is not None
        return {"remaining": deadline.remaining()}

    values = _collect(RAW_VALUES, 120)
    statuses: set[int] = set()
    async with serve_uvicorn(app) as url:
        port = int(url.rsplit(":", 1)[1])
        for index, value in enumerate(values):
            statuses.add(await _status(port, _NAMES[index % len(_NAMES)], value))
    assert 500 not in statuses
    assert statuses <= {200, 400, 504}
    assert 200 in statuses


async def test_aiohttp_never_answers_500() -> None:
    """Fuzzed header bytes on a real aiohttp server: never 500, never a handler exception."""
    failures: list[int] = []

    async def echo(request: web.Request) -> web.Response:
        deadline = ac.current_deadline()
        assert deadline is not None
        return web.json_response({"remaining": deadline.remaining()})

    middleware = aiohttp_middleware(
        timeout=5.0, observer=lambda outcome: failures.append(outcome.status)
    )
    app = web.Application(middlewares=[middleware])
    app.router.add_get("/echo", echo)
    values = _collect(RAW_VALUES, 120)
    statuses: set[int] = set()
    async with serve_aiohttp(app) as url:
        port = int(url.rsplit(":", 1)[1])
        for index, value in enumerate(values):
            statuses.add(await _status(port, _NAMES[index % len(_NAMES)], value))
    assert 500 not in statuses
    assert statuses <= {200, 400, 504}
    assert 200 in statuses
    assert middleware.stats.failed == 0
    assert 500 not in failures
