"""The transport seam: the one place bytes meet the network."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .._call import current_attempt
from .._deadline import (
    TIMEOUT_HEADER,
    current_deadline,
    format_timeout_header,
    parse_timeout_header,
)
from .._errors import DeadlineExceededError

if TYPE_CHECKING:
    from .._models import Request, Response

__all__ = ["BodyStream", "StreamingTransport", "Transport", "backend_timeout"]


@runtime_checkable
class Transport(Protocol):
    """Sends one request and returns the fully read response.

    ``request.url`` is absolute. A transport does I/O only: no retries, no
    policy. It raises only :mod:`aio_client` errors (mapped in one place per
    backend), and bounds its backend's own timeout by :func:`backend_timeout`
    (``None`` inside a client, which cancels the attempt at its deadline itself).
    It reads at most :func:`response_size_limit` bytes of decoded body, raising
    :class:`~aio_client.ResponseTooLargeError` past it (and before reading when
    ``Content-Length`` says more). When the calling task is cancelled, the
    connection in use is released or closed before the cancellation propagates.
    """

    async def send(self, request: Request, /) -> Response: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class BodyStream(Protocol):
    """The body of a response whose head has arrived, read as it comes.

    ``receive()`` returns the next piece of the decoded body (never more than
    a transport's read size at once), and ``b""`` at its end; it raises only
    :mod:`aio_client` errors, and on cancellation the connection is closed
    before the cancellation propagates. ``aclose()`` gives the connection
    back when the body was read to its end and closes it otherwise; it may
    be called more than once.
    """

    async def receive(self) -> bytes: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class StreamingTransport(Transport, Protocol):
    """A transport that can also hand out a response before its body is read.

    ``open(request)`` returns the response head (a :class:`Response` with an
    empty body) and the :class:`BodyStream` of its body. No size limit applies
    inside: the caller counts what it reads.
    """

    async def open(self, request: Request, /) -> tuple[Response, BodyStream]: ...


def backend_timeout() -> float | None:
    """Seconds the backend must enforce itself, or ``None`` when nothing needs it.

    Inside a client's attempt, the client already cancels the attempt at its
    deadline (:attr:`aio_client.AttemptInfo.deadline`); arming the backend's own
    timer as well would cost every request a second timer for nothing. Only a
    nearer deadline set inside the attempt (an attempt stage's ``ambient()``),
    or a transport called on its own under an ambient deadline, is left to the
    backend.

    Raises :class:`~aio_client.DeadlineExceededError` (not sent) when that
    deadline has already passed: backends read a zero timeout as "none", so a
    transport must not connect at all then.
    """
    deadline = current_deadline()
    if deadline is None:
        return None
    attempt = current_attempt()
    if attempt is not None and attempt.deadline.at <= deadline.at:
        return None
    remaining = deadline.remaining()
    if remaining <= 0.0:
        raise DeadlineExceededError(
            "not sent: the deadline has passed", may_have_reached_server=False
        )
    return remaining


def restamped(request: Request, waited: float) -> Request:
    """``request`` with its ``X-Request-Timeout`` brought up to date after ``waited``
    seconds in a transport's queue for a connection.

    The client stamps the attempt's budget when it builds the request; what
    goes out is what is left now: the stamp less the wait, and no more than
    the attempt's deadline or a nearer ambient one allows, so that the server
    never gets more time than the caller has. With less than a millisecond
    left, nothing is sent (:class:`~aio_client.DeadlineExceededError`).
    """
    headers = request.headers
    stamped = headers.get(TIMEOUT_HEADER)
    if stamped is None:
        return request
    left = parse_timeout_header(stamped)
    left = math.inf if left is None else left - waited
    attempt = current_attempt()
    if attempt is not None:
        left = min(left, attempt.deadline.remaining())
    ambient = current_deadline()
    if ambient is not None:
        left = min(left, ambient.remaining())
    if left == math.inf:  # a stamp that is not a budget, and nothing else to go by
        return request
    if left < 0.001:
        raise DeadlineExceededError(
            "not sent: the deadline passed while waiting for a connection",
            may_have_reached_server=False,
        )
    stamp = ((TIMEOUT_HEADER, format_timeout_header(left)),)
    return request._bound(request.url, headers._with(stamp))
