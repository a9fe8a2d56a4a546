"""WebSocket connections under a cancellation token: what every adapter shares.

A connection is not a request: the deadline headers, guards and load shedding
do not apply to it, and it has no outcome for the observer. It gets a
:class:`~aio_client.CancelToken` of its own (``ServerCore.open_connection``),
which fires when the client goes away (``CLIENT_DISCONNECTED``), when the
server shuts down (``SHUTDOWN``) or when ``websocket_timeout`` passes
(``DEADLINE``). The handler runs in the token's scope, so it is cancelled
then, and the adapter closes the connection with the code below.
"""

from __future__ import annotations

from typing import Final

from .._cancel import CancelReason

__all__ = ["GOING_AWAY", "NORMAL_CLOSURE", "SERVICE_RESTART", "close_code", "close_text"]

#: RFC 6455 close code: the purpose of the connection was fulfilled.
NORMAL_CLOSURE: Final = 1000
#: RFC 6455 close code: the server is going away (shutting down, or the
#: connection reached ``websocket_timeout``); clients reconnect.
GOING_AWAY: Final = 1001
#: RFC 6455 close code (IANA registry): the service is restarting. Servers
#: such as uvicorn close their connections with it when they stop.
SERVICE_RESTART: Final = 1012


def close_code(reason: CancelReason) -> int:
    """The close code a connection cancelled with ``reason`` is closed with."""
    if reason is CancelReason.SHUTDOWN or reason is CancelReason.DEADLINE:
        return GOING_AWAY
    return NORMAL_CLOSURE


def close_text(reason: CancelReason) -> str:
    """The close frame's reason text for ``reason`` (short: at most 123 bytes)."""
    if reason is CancelReason.SHUTDOWN:
        return "the server is shutting down"
    if reason is CancelReason.DEADLINE:
        return "the connection reached its time limit"
    return "the connection was cancelled"
