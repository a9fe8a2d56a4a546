"""The strategy protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .._call import Call
    from .._models import Response

__all__ = ["Strategy"]


class Strategy(Protocol):
    """Decides when attempts go out and how many; see :class:`aio_client.Call`.

    ``execute`` returns the call's final response or raises its error (via
    :meth:`Call.result`); it must not leave attempts running when it returns.
    """

    async def execute(self, call: Call, /) -> Response: ...
