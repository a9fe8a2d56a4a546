"""Property: a request either fails to build, or arrives the same over aiohttp and httpx.

Hypothesis builds random requests (methods, templates with placeholders,
path params, query, headers, bodies, with dots, percent signs, separators,
control and non-ASCII characters mixed in) and sends each through both
transports to the recording ``/echo`` route of the shared test app on
127.0.0.1. Each either raises :class:`InvalidRequestError` when built (before
any transport is involved), or reaches the server with exactly the method,
path, query, headers and body that were built, identical on both transports.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import aio_client as ac
from aio_client.transports import AiohttpTransport, HttpxTransport
from tests.integration.servers import app_server

# Bounded and derandomized: the same examples every run, in well under 20 s.
PROPERTY = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PROPAGATION = {"x-request-timeout", "x-request-priority", "x-request-attempt"}

# Characters that make URLs and headers interesting, plus ordinary ones.
TRICKY = "./%?#&=;:@!$'()*+,~-_ \t\r\n\x00\x7f\\\"<>{}|^`[]é✓\u2028"
PLAIN = "abcXYZ019-_.~"
# Half plain, half tricky: enough requests get built to be compared on the wire.
TEXT = st.one_of(st.text(alphabet=PLAIN, max_size=8), st.text(alphabet=TRICKY + PLAIN, max_size=8))
SEGMENT = st.one_of(
    TEXT,
    st.sampled_from([".", "..", "%2e", "%2E%2e", ".%2E", "a.b", "...", "%41", "%zz", "%"]),
    st.sampled_from(["{p}", "{q}", "x{p}y", "%{p}"]),
)
METHODS = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE", "get"])
SCALAR = st.one_of(TEXT, st.integers(-5, 10**6), st.booleans(), st.floats(-1e3, 1e3))
QUERY = st.one_of(
    st.none(),
    st.lists(st.tuples(TEXT, SCALAR), max_size=4),
    st.dictionaries(TEXT, st.one_of(SCALAR, st.lists(SCALAR, max_size=3)), max_size=3),
)
HEADER_NAME = st.one_of(
    st.builds(lambda tail: f"x-{tail}", TEXT),
    st.sampled_from(["X-Token", "authorization", "Cookie", "x-dup", "X-DUP", "accept"]),
)
HEADERS = st.lists(st.tuples(HEADER_NAME, TEXT), max_size=5)
BODY = st.one_of(st.none(), st.binary(max_size=64), TEXT)


@dataclass(frozen=True)
class Draw:
    """One random request, as the caller would write it."""

    method: str
    segments: list[str]
    params: dict[str, str | int]
    query: Any
    headers: list[tuple[str, str]]
    body: bytes | str | None

    def build(self) -> ac.Request:
        """Build it with the public builder (which may refuse it)."""
        template = "echo/" + "/".join(self.segments)
        used = {name: value for name, value in self.params.items() if "{" + name + "}" in template}
        return ac.request(
            self.method,
            template,
            path_params=used or None,
            query=self.query,
            headers=self.headers,
            content=self.body,
        )


DRAWS = st.builds(
    Draw,
    method=METHODS,
    segments=st.lists(SEGMENT, max_size=4),
    params=st.fixed_dictionaries(
        {"p": st.one_of(TEXT, st.integers(-3, 99)), "q": st.one_of(TEXT, st.integers(0, 9))}
    ),
    query=QUERY,
    headers=HEADERS,
    body=BODY,
)


@dataclass
class Wire:
    """The test app and one client per transport, living in a portal's event loop."""

    portal: BlockingPortal
    clients: dict[str, ac.Client]

    async def send_all(self, request: ac.Request) -> dict[str, dict[str, Any]]:
        """Send ``request`` over each transport; what /echo saw, per transport."""
        seen: dict[str, dict[str, Any]] = {}
        for backend, client in self.clients.items():
            response = await client.request(request)
            assert response.status == 200, (backend, response.status, response.text)
            body = response.json()
            assert isinstance(body, dict)
            seen[backend] = body
        return seen


@pytest.fixture(scope="module")
def wire() -> Iterator[Wire]:
    """The recording app on 127.0.0.1 and a client over each transport (one loop, one thread)."""
    with ExitStack() as stack:
        portal = stack.enter_context(start_blocking_portal("asyncio"))
        app = stack.enter_context(portal.wrap_async_context_manager(app_server()))
        clients = {
            backend: stack.enter_context(
                portal.wrap_async_context_manager(
                    ac.Client(
                        transport,
                        app.url,
                        timeout=5.0,
                        strategy=ac.single_attempt_strategy(),
                    )
                )
            )
            for backend, transport in (
                ("aiohttp", portal.call(_aiohttp_transport)),
                ("httpx", portal.call(_httpx_transport)),
            )
        }
        yield Wire(portal, clients)


async def _aiohttp_transport() -> AiohttpTransport:
    return AiohttpTransport()


async def _httpx_transport() -> HttpxTransport:
    return HttpxTransport()


@PROPERTY
@given(draw=DRAWS)
def test_a_request_is_refused_when_built_or_arrives_the_same_on_both_transports(
    wire: Wire, draw: Draw
) -> None:
    """Random requests: InvalidRequestError at build, or identical arrival over both transports."""
    try:
        request = draw.build()
    except ac.InvalidRequestError:
        event("refused when built")
        return  # refused before any transport: the same for both by construction
    event("sent")
    seen = wire.portal.call(wire.send_all, request)
    expected_headers = [
        [name, value] for name, value in request.headers.multi_items() if name not in PROPAGATION
    ]
    names = {name for name, _ in expected_headers}
    for backend, echo in seen.items():
        arrived = [[n, v] for n, v in echo["headers"] if n in names and n not in PROPAGATION]
        assert echo["method"] == request.method, backend
        assert echo["target"] == "/" + request.url, backend
        assert arrived == expected_headers, backend
        assert echo["body"].encode("latin-1") == request.content, backend
    assert seen["aiohttp"]["query_pairs"] == seen["httpx"]["query_pairs"]
