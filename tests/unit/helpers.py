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
