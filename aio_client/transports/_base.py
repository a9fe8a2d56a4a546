"""The transport seam: the one place bytes meet the network."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .._deadline import current_deadline

if TYPE_CHECKING:
    from .._models import Request, Response

__all__ = ["Transport", "attempt_timeout"]


@runtime_checkable
class Transport(Protocol):
    """Sends one request and returns the fully read response.

    ``request.url`` is absolute. A transport does I/O only: no retries, no
    policy. It raises only :mod:`aio_client` errors (mapped in one place per
    backend), and bounds its backend's own timeout by :func:`attempt_timeout`.
    When the calling task is cancelled, the connection in use is released or
    closed before the cancellation propagates.
    """

    async def send(self, request: Request, /) -> Response: ...

    async def aclose(self) -> None: ...


def attempt_timeout() -> float | None:
    """Seconds the attempt in progress may still take (from the ambient deadline)."""
    deadline = current_deadline()
    return None if deadline is None else deadline.remaining()
