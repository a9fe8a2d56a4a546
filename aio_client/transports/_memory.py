"""An in-process transport: a handler function or an ASGI app, no sockets."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, cast, final
from urllib.parse import unquote, urlsplit

import anyio
import anyio.lowlevel

from .._asgi import ASGIApp, Message
from .._body import StreamBody
from .._errors import ConfigError, ProtocolError, ResponseTooLargeError
from .._headers import Headers
from .._models import Request, Response
from .._size_limit import BodyCounter, response_size_limit, too_large
from ._base import BodyStream

__all__ = ["ASGIApp", "MemoryHandler", "MemoryTransport"]

#: ``async (request) -> Response``: may raise aio_client errors to simulate failures.
MemoryHandler = Callable[[Request], Awaitable[Response]]


@final
class MemoryTransport:
    """Serves requests from a handler or an ASGI app in the same process.

    ``MemoryTransport(handler)`` calls ``await handler(request)``;
    ``MemoryTransport(app)`` runs an ASGI 3 app (three parameters: scope,
    receive, send) without lifespan. For tests, examples and benchmarks.

    It behaves like the wire where that shows: an ASGI app's answer to a HEAD
    request arrives without a body, and the response size limit applies (a
    handler's response is checked whole; an ASGI app is stopped at the limit).
    """

    __slots__ = ("_app", "_handler")

    def __init__(self, handler: MemoryHandler | ASGIApp) -> None:
        if not callable(handler):
            raise ConfigError(f"MemoryTransport needs a handler or ASGI app; got {handler!r}")
        # Kept apart and typed, so that send() pays no cast() per request.
        self._app: ASGIApp | None = cast(ASGIApp, handler) if _is_asgi(handler) else None
        self._handler = cast(MemoryHandler, handler)

    async def send(self, request: Request, /) -> Response:
        """Hand ``request`` to the handler or app and return what it answers."""
        if self._app is not None:
            return await _call_asgi(self._app, request)
        # Every call passes here: the checks cost nothing for an empty body.
        if request.content and request.content.__class__ is StreamBody:
            request = await _joined(request)  # a handler gets the body whole
        response = await self._handler(request)
        if response.content:
            _check_size(response)
        return response

    async def open(self, request: Request, /) -> tuple[Response, BodyStream]:
        """:meth:`send`, with the body handed out afterwards.

        The handler or app runs to its end first: the body is buffered, so an
        app's endless stream never ends here (use a real server for those).
        """
        response = await self.send(request)
        head = Response._received(response.status, response.headers, b"", request.url)
        return head, _BufferedBody(response.content)

    async def aclose(self) -> None:
        """Nothing to release."""


@final
class _BufferedBody:
    """A body already in memory, handed out in one piece."""

    __slots__ = ("_content",)

    def __init__(self, content: bytes) -> None:
        self._content = content

    async def receive(self) -> bytes:
        """The whole body the first time, then ``b""``."""
        content, self._content = self._content, b""
        await anyio.lowlevel.checkpoint()
        return content

    async def aclose(self) -> None:
        """Drop the body."""
        self._content = b""


def _is_asgi(handler: Callable[..., object]) -> bool:
    try:
        params = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) == 3


async def _call_asgi(app: ASGIApp, request: Request) -> Response:
    parts = urlsplit(request.url)
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": parts.scheme or "http",
        "path": unquote(parts.path) or "/",
        "raw_path": (parts.path or "/").encode(),
        "query_string": parts.query.encode(),
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in request.headers.multi_items()]
        + [(b"host", (parts.netloc or "memory").encode())],
        "client": ("127.0.0.1", 0),
        "server": (parts.hostname or "memory", parts.port or 80),
        "state": {},
    }
    body_sent = False
    response_done = anyio.Event()
    content = request.content
    chunks_in = content.open() if isinstance(content, StreamBody) else None

    async def receive() -> Message:
        nonlocal body_sent
        if chunks_in is not None and not body_sent:
            chunk = await anext(chunks_in, None)
            if chunk is not None:
                return {"type": "http.request", "body": chunk, "more_body": True}
            body_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": content, "more_body": False}
        await response_done.wait()
        return {"type": "http.disconnect"}

    status: int | None = None
    headers: list[tuple[str, str]] = []
    chunks: list[bytes] = []
    limit = response_size_limit()
    counter = BodyCounter(limit) if limit is not None else None
    # A real server sends no body with an answer to HEAD, whatever the app wrote.
    keep_body = request.method != "HEAD"
    refused: ResponseTooLargeError | None = None

    def refuse(error: ResponseTooLargeError) -> NoReturn:
        # The app sees its send() fail, as a closed connection would make it;
        # whatever it does with that, the caller gets this error.
        nonlocal refused
        refused = error
        response_done.set()
        raise error

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
            headers.extend(
                (bytes(k).decode("latin-1").lower(), bytes(v).decode("latin-1"))
                for k, v in message.get("headers", ())
            )
            if counter is not None and keep_body:
                announced = _content_length(headers)
                if announced is not None and announced > counter.limit:
                    refuse(too_large(counter.limit, announced=announced))
        elif message["type"] == "http.response.body":
            if keep_body:
                chunk = bytes(message.get("body", b""))
                if counter is not None:
                    try:
                        counter.add(len(chunk))
                    except ResponseTooLargeError as exc:
                        chunks.clear()
                        refuse(exc)
                chunks.append(chunk)
            if not message.get("more_body", False):
                response_done.set()

    try:
        await app(scope, receive, send)
    except Exception:
        if refused is None:
            raise
    finally:
        response_done.set()
    if refused is not None:
        raise refused
    if status is None:
        raise ProtocolError("the ASGI app returned without starting a response")
    return Response._received(
        status, Headers._trusted(tuple(headers)), b"".join(chunks), request.url
    )


async def _joined(request: Request) -> Request:
    content = request.content
    assert isinstance(content, StreamBody)
    body = b"".join([chunk async for chunk in content.open()])
    return Request(request.method, request.url, request.headers, body, request.route)


def _check_size(response: Response) -> None:
    limit = response_size_limit()
    if limit is not None and len(response.content) > limit:
        raise too_large(limit)


def _content_length(headers: list[tuple[str, str]]) -> int | None:
    for name, value in headers:
        if name == "content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
