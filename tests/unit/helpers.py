"""Small in-memory servers for unit tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import aio_client as ac
from aio_client.testing import Delayed, ScriptedTransport
from aio_client.transports import MemoryTransport

Step = ac.Response | ac.AioClientError | float


class Script:
    """The suite's shorthand for :class:`aio_client.testing.ScriptedTransport`.

    A float step sleeps that long and then answers 200; the last step repeats.
    Usable as a :class:`MemoryTransport` handler; ``requests`` and ``arrivals``
    are the scripted transport's records.
    """

    def __init__(self, steps: Iterable[Step]) -> None:
        self.transport = ScriptedTransport(
            *(
                Delayed(step, ac.Response(200, content=b"slow ok"))
                if isinstance(step, float)
                else step
                for step in steps
            )
        )

    @property
    def requests(self) -> list[ac.Request]:
        """Every request seen, in arrival order."""
        return self.transport.requests

    @property
    def arrivals(self) -> list[float]:
        """The loop time each request arrived."""
        return self.transport.arrivals

    async def __call__(self, request: ac.Request) -> ac.Response:
        return await self.transport.send(request)


def client_for(
    handler: Callable[[ac.Request], Awaitable[ac.Response]],
    **options: object,
) -> ac.Client:
    """A client over a memory transport at http://svc."""
    return ac.Client(MemoryTransport(handler), "http://svc", **options)  # type: ignore[arg-type]


class StatusExchange:
    """The server core's view of a request whose handler returns its status (for core tests).

    ``error_status`` maps an exception to the status a framework would answer
    it with (``None``: 500).
    """

    started = False
    disconnected = False

    def __init__(
        self,
        handler: Callable[[], Awaitable[int]],
        error_status: Callable[[Exception], int | None] | None = None,
    ) -> None:
        self._handler = handler
        self._error_status = error_status

    def call(self) -> Awaitable[int]:
        """Call the handler."""
        return self._handler()

    def status_of(self, value: int, /) -> int:
        """The handler's value is the status."""
        return value

    def status_of_error(self, exc: Exception, /) -> int | None:
        """The status ``error_status`` gives, or ``None``."""
        return None if self._error_status is None else self._error_status(exc)
