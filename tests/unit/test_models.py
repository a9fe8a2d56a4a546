"""Request builders, headers and responses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import pytest

import aio_client as ac
from aio_client._headers import Headers
from aio_client.transports import MemoryTransport


def test_path_params_are_escaped_into_one_segment() -> None:
    """A path parameter with '/', '?', ' ' stays one percent-escaped segment."""
    req = ac.get("users/{id}/items", path_params={"id": "a/b c?d#e"})
    assert req.url == "users/a%2Fb%20c%3Fd%23e/items"
    assert req.route == "users/{id}/items"


@pytest.mark.parametrize("value", [".", ".."])
def test_dot_segments_cannot_traverse(value: str) -> None:
    """'.' and '..' as parameters are refused: normalising proxies would collapse even %2E."""
    with pytest.raises(ac.InvalidRequestError, match=r"path_params\['name'\]"):
        ac.get("files/{name}", path_params={"name": value})


def test_query_encoding_repeats_and_escapes() -> None:
    """Query values are escaped; sequences repeat the key; bools read true/false."""
    # Annotated: mypy infers dict[str, object] for this literal against the query= union.
    query: dict[str, str | int | list[str]] = {
        "q": "a&b=c",
        "tag": ["x", "y"],
        "flag": True,
        "n": 2,
    }
    req = ac.get("s", query=query)
    assert req.url == "s?q=a%26b%3Dc&tag=x&tag=y&flag=true&n=2"


def test_json_body_sets_content_type() -> None:
    """json= is serialised compactly and sets Content-Type."""
    req = ac.post("items", json={"a": [1, 2]})
    assert req.content == b'{"a":[1,2]}'
    assert req.headers["Content-Type"] == "application/json"
    assert req.method == "POST"


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: ac.get("http://evil/x"), "absolute URL"),
        (lambda: ac.get("//evil/x"), "absolute URL"),
        (lambda: ac.get("users/{id}"), "needs path_params"),
        (lambda: ac.get("users", path_params={"id": 1}), "do not appear"),
        (lambda: ac.get("users/{id}", path_params={"id": ""}), "must not be empty"),
        (lambda: ac.get("users/{id}", path_params={"id": True}), "str or int"),
        (lambda: ac.get("a?b=1"), "query="),
        (lambda: ac.get("a", headers={"x-bad": "v\r\nInjected: 1"}), "control character"),
        (lambda: ac.get("a", headers={"bad name": "v"}), "invalid header name"),
        (lambda: ac.get("a", query={"k": None}), "float or bool"),  # type: ignore[dict-item]
        (lambda: ac.post("a", json={"x": float("nan")}), "JSON"),
        (lambda: ac.post("a", json={"a": 1}, content=b"x"), "not both"),
        (lambda: ac.request("GET POST", "a"), "method"),
    ],
)
def test_bad_input_is_a_clear_error(build: object, fragment: str) -> None:
    """Bad builder input raises InvalidRequestError (a ValueError) naming the problem."""
    with pytest.raises(ac.InvalidRequestError, match=fragment) as info:
        build()  # type: ignore[operator]
    assert isinstance(info.value, ValueError)
    assert info.value.may_have_reached_server is False


def test_headers_case_insensitive_and_multi_valued() -> None:
    """Lookups ignore case; get_list returns every value in order."""
    headers = ac.Headers([("Set-Cookie", "a=1"), ("set-cookie", "b=2"), ("X-A", "v")])
    assert headers["x-a"] == "v"
    assert "X-A" in headers
    assert headers.get_list("SET-COOKIE") == ["a=1", "b=2"]
    assert headers.get("missing") is None
    assert len(headers) == 2


def test_response_text_json_and_charset() -> None:
    """text decodes with the declared charset; json() parses the body."""
    resp = ac.Response(200, {"content-type": "text/plain; charset=latin-1"}, "é".encode("latin-1"))
    assert resp.text == "é"
    assert ac.Response(200, content=b'{"k": [1]}').json() == {"k": [1]}
    assert ac.Response(200, {"content-type": "text/plain; charset=bogus"}, b"ok").text == "ok"


def test_raise_for_status() -> None:
    """raise_for_status raises HTTPStatusError for 4xx/5xx and returns self otherwise."""
    ok = ac.Response(204)
    assert ok.raise_for_status() is ok
    with pytest.raises(ac.HTTPStatusError, match="server error 503") as info:
        ac.Response(503, url="http://svc/x").raise_for_status()
    assert info.value.response.status == 503


def test_requests_are_frozen() -> None:
    """Requests cannot be mutated."""
    req = ac.get("a")
    with pytest.raises(AttributeError):
        req.url = "b"  # type: ignore[misc]


def test_received_headers_are_lower_cased_when_first_used() -> None:
    """Headers a backend parsed read like any others: case-insensitive, repeats kept."""
    wire = {"Content-Type": "text/plain"}.items()
    received = Headers._received(
        [("Content-Type", "text/plain"), ("Set-Cookie", "a"), ("set-cookie", "b")]
    )
    assert received["content-type"] == "text/plain"
    assert received.get_list("SET-COOKIE") == ["a", "b"]
    assert len(received) == 2
    assert "Set-Cookie" in received
    assert received == ac.Headers(
        [("content-type", "text/plain"), ("set-cookie", "a"), ("set-cookie", "b")]
    )
    assert Headers._received(wire).multi_items() == (("content-type", "text/plain"),)
    stamped = Headers._received(wire)._with((("x-request-attempt", "2"),))
    assert stamped.multi_items() == (("content-type", "text/plain"), ("x-request-attempt", "2"))


async def test_a_handlers_shared_response_is_never_changed_by_a_call() -> None:
    """A response a handler keeps and returns again is copied per call; one fresh from a
    transport is stamped with the attempt that read it."""
    shared = ac.Response(200, content=b"same")

    async def handler(request: ac.Request) -> ac.Response:
        return shared

    async with ac.Client(MemoryTransport(handler), "http://svc") as client:
        first = await client.request(ac.get("a"))
        second = await client.request(ac.get("b"))
    assert (shared.url, shared.attempt, shared.elapsed) == ("", 1, 0.0)
    assert first is not shared
    assert second is not first
    assert (first.url, second.url) == ("http://svc/a", "http://svc/b")

    async def app(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    retrying = ac.sequential_strategy(attempts=2, delays=ac.constant_delays(0.0))
    async with ac.Client(MemoryTransport(app), "http://svc", strategy=retrying) as client:
        response = await client.request(ac.get("a"))
    assert (response.status, response.attempt) == (503, 2)
    assert response.elapsed >= 0.0
