"""What leaks: secrets stay out of reprs, error messages and attempt records."""

from __future__ import annotations

import gc
import warnings
from collections.abc import AsyncIterator

import pytest

import aio_client as ac
from aio_client.transports import AiohttpTransport, HttpxTransport, MemoryTransport, Transport
from tests.integration.servers import AppServer, app_server

SECRET = "s3cr3t-token"
SECRET_HEADERS = {
    "Authorization": f"Bearer {SECRET}",
    "Proxy-Authorization": f"Basic {SECRET}",
    "Cookie": f"session={SECRET}",
    "Set-Cookie": f"session={SECRET}",
}


def test_request_and_headers_reprs_hide_secret_headers() -> None:
    """repr(Request) and repr(Headers) show <redacted> for the four credential headers."""
    request = ac.get("x", headers={**SECRET_HEADERS, "X-Plain": "visible"})
    for shown in (repr(request), repr(request.headers), str(request)):
        assert SECRET not in shown
        assert "<redacted>" in shown
        assert "visible" in shown
    # What is sent is untouched.
    assert request.headers["authorization"] == f"Bearer {SECRET}"


def test_response_reprs_hide_set_cookie() -> None:
    """A response's repr hides Set-Cookie values too."""
    response = ac.Response(200, headers=ac.Headers({"Set-Cookie": f"id={SECRET}"}))
    assert SECRET not in repr(response)


def test_reprs_show_query_keys_but_not_their_values() -> None:
    """repr(Request) and repr(Response) keep query keys and hide their values."""
    request = ac.get("users", query={"token": SECRET, "page": "2"})
    response = ac.Response(200, url=f"http://svc/users?token={SECRET}")
    assert "users?token=<redacted>&page=<redacted>" in repr(request)
    assert "http://svc/users?token=<redacted>" in repr(response)
    assert SECRET in request.url  # what is sent is untouched


def test_redact_headers_extends_the_set() -> None:
    """Names given to redact_headers() are hidden from then on, in any case."""
    name = "X-Security-Test-Key"
    assert SECRET in repr(ac.Headers({name: SECRET}))
    ac.redact_headers(name.upper())
    assert SECRET not in repr(ac.Headers({name: SECRET}))
    with pytest.raises(ac.InvalidRequestError, match="invalid header name"):
        ac.redact_headers("not a name")


async def _failing(_: ac.Request, /) -> ac.Response:
    raise ac.NetworkError("connection lost")


async def test_attempt_records_keep_no_query_values() -> None:
    """error.attempts[i].url keeps the query keys but none of their values."""
    client = ac.Client(
        MemoryTransport(_failing),
        "http://svc/api",
        strategy=ac.sequential_strategy(2, ac.constant_delays(0.0)),
    )
    with pytest.raises(ac.NetworkError) as info:
        await client.get("users", query={"token": SECRET, "page": "2"}, headers=SECRET_HEADERS)
    urls = [record.url for record in info.value.attempts]
    assert urls == ["http://svc/api/users?token=<redacted>&page=<redacted>"] * 2
    assert SECRET not in repr(info.value.attempts)
    assert SECRET not in str(info.value)


@pytest.fixture(params=["aiohttp", "httpx"])
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[Transport]:
    """Each real transport, owning its pool."""
    made: Transport = AiohttpTransport() if request.param == "aiohttp" else HttpxTransport()
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture
async def app() -> AsyncIterator[AppServer]:
    """The shared test app on 127.0.0.1."""
    async with app_server() as server:
        yield server


async def test_http_status_error_carries_attempts_and_no_secrets(
    transport: Transport, app: AppServer
) -> None:
    """raise_for_status(): HTTPStatusError.attempts is the call's history; no query value shown."""
    async with ac.Client(
        transport, app.url, strategy=ac.sequential_strategy(3, ac.constant_delays(0.0))
    ) as client:
        response = await client.get("status/503", query={"token": SECRET})
    assert len(response.attempts) == 3
    with pytest.raises(ac.HTTPStatusError) as info:
        response.raise_for_status()
    error = info.value
    assert error.attempts == response.attempts
    assert [(r.number, r.status) for r in error.attempts] == [(1, 503), (2, 503), (3, 503)]
    assert all(SECRET not in r.url for r in error.attempts)
    assert SECRET not in str(error)
    assert "token=<redacted>" in str(error)


async def test_a_successful_call_also_has_its_history() -> None:
    """Response.attempts holds every attempt of the call that returned it."""
    answers = iter([ac.Response(503), ac.Response(200)])

    async def handler(_: ac.Request, /) -> ac.Response:
        return next(answers)

    client = ac.Client(
        MemoryTransport(handler),
        "http://svc",
        strategy=ac.sequential_strategy(2, ac.constant_delays(0.0)),
    )
    response = await client.get("x")
    assert [r.status for r in response.attempts] == [503, 200]
    assert ac.Response(500).attempts == ()


async def test_forgetting_await_warns_naming_the_call() -> None:
    """client.post(...) without await sends nothing and warns like an un-awaited coroutine."""
    sent: list[ac.Request] = []

    async def record(request: ac.Request, /) -> ac.Response:
        sent.append(request)
        return ac.Response(200)

    client = ac.Client(MemoryTransport(record), "http://svc")
    # The dropped call is finalised at the end of its statement (reference counting).
    with pytest.warns(RuntimeWarning, match=r"Client\.post\('users/\{id\}'\).*never awaited"):
        client.post("users/{id}", path_params={"id": 1}, json={"a": 1})
    with pytest.warns(RuntimeWarning, match=r"Client\.request.*never awaited"):
        client.request(ac.get("x"))
    assert sent == []
    # Awaited or entered, nothing warns.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        await client.get("x")
        async with client.delete("x") as response:
            assert response.status == 200
        gc.collect()
    assert len(sent) == 2
