"""The options every server adapter takes, written once.

``DeadlineMiddleware(app, **options)``, ``aiohttp_middleware(**options)`` and
``aio_client.server.sanic.setup(app, **options)`` all take the keywords of
:class:`ServerOptions` and hand them to the one core that reads them; an
option added here is added to every adapter.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Hashable, Sequence
from typing import Final, TypedDict, final

from .._errors import ConfigError
from .._priority import Priority
from .._server_events import ClientInfo, ServerOutcome
from ._guards import Guard
from ._shedding import PriorityLoadShedder

__all__ = ["OPTION_NAMES", "ServerOptions", "TrustedPeers", "trusted_peers"]

# Addresses remembered per TrustedPeers (an address is parsed once; a scan of
# random addresses cannot grow the memory without bound).
_CACHE_LIMIT: Final = 4096


class ServerOptions(TypedDict, total=False):
    """Keyword options of every server adapter (seconds are floats).

    Each is optional; the default is given with it.
    """

    #: Budget of a request that carries no valid deadline header (20 s).
    timeout: float
    #: The most any request gets, whatever its header says (``None``: 60 s, or
    #: ``timeout`` when that is longer).
    max_timeout: float | None
    #: A request arriving with less budget than this gets 504 without running
    #: the handler (5 ms).
    low_timeout: float
    #: Priority of a request without a valid (or trusted) priority header (NORMAL).
    priority: Priority | str
    #: Who may raise a request's priority with ``X-Request-Priority``: a function
    #: of the request's :class:`ClientInfo` returning whether to believe it, such
    #: as :func:`trusted_peers`. Anyone may lower theirs; a priority above
    #: ``priority`` from anyone else is ignored (the request gets ``priority``).
    #: Default ``None``: nobody, since any client can send the header.
    trust_priority: Callable[[ClientInfo], bool] | None
    #: A :class:`PriorityLoadShedder`, or ``None`` (the default).
    load_shedder: PriorityLoadShedder | None
    #: Called with a :class:`ServerOutcome` once per request, as the request
    #: ends (inside the request's context, so a tracing span the server opened
    #: around the app is still current). When it also has a
    #: ``request_started(admission)`` method, that is called as an admitted
    #: request's handler starts (for in-flight gauges); every such call is
    #: followed by an outcome with ``handled=True``. An observer that raises is
    #: logged and never changes the response. A sequence of observers is called
    #: in order, each on its own.
    observer: Callable[[ServerOutcome], object] | Sequence[Callable[[ServerOutcome], object]] | None
    #: Rate limiters, bulkheads and circuit breakers applied to every request,
    #: in order, after load shedding and before the handler (429 / 503).
    guards: Sequence[Guard]
    #: The client identity keyed rate limiters use, from a :class:`ClientInfo`
    #: (default: :attr:`ClientInfo.address`).
    client_key: Callable[[ClientInfo], Hashable] | None
    #: Trust this header's left-most address as the client's
    #: (``"x-forwarded-for"``, ``"forwarded"``); never trusted by default,
    #: since any client can send one.
    forwarded_header: str | None
    #: Your own answer to an exception escaping a handler: a function returning
    #: a status (sent with a short text body) or ``None`` for the default table
    #: (``aio_client.server.status_of_refusal``: a local policy's refusal is
    #: 429/503/504, an outgoing call's deadline 504, its failure 502, anything
    #: else the framework's 500).
    error_status: Callable[[Exception], int | None] | None
    #: What bounds a response once it has started (its head sent): ``None``
    #: (the default) keeps the request's deadline for the whole response,
    #: streamed body included; seconds replace that deadline, from the moment
    #: the response starts, with ``start + stream_timeout`` (longer or
    #: shorter). Until the response starts the deadline applies either way.
    #:
    #: Why the default keeps the deadline: the caller's budget covers the whole
    #: exchange (``client.stream()`` reads the body under it too), so bytes
    #: streamed past it go to nobody. Long-lived streams (Server-Sent Events,
    #: exports) set a bound of their own; a total duration rather than an idle
    #: timeout, because a stream that sends heartbeats (``sse_stream``) is
    #: never idle, and a bounded stream recycles its connection, which SSE
    #: clients reconnect by themselves. A stream that hits it ends with
    #: ``DEADLINE`` and a broken connection (never a clean end of a truncated
    #: body). Calls the stream makes still inherit the request's own deadline.
    stream_timeout: float | None
    #: The longest a WebSocket connection lasts, in seconds (``None``, the
    #: default: as long as both ends keep it). A connection reaching it is
    #: cancelled with ``DEADLINE`` and closed with code 1001 (going away). The request's
    #: deadline headers do not apply to WebSocket connections.
    websocket_timeout: float | None


#: Every option's name.
OPTION_NAMES: Final = ServerOptions.__optional_keys__ | ServerOptions.__required_keys__


@final
class TrustedPeers:
    """What :func:`trusted_peers` returns: whether a client's address is in given networks."""

    __slots__ = ("_known", "networks")

    def __init__(self, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
        #: The trusted networks.
        self.networks = tuple(networks)
        self._known: dict[str, bool] = {}

    def __call__(self, client: ClientInfo, /) -> bool:
        """Whether ``client.address`` (the trusted forwarded address, else the peer) is trusted."""
        address = client.address
        if address is None:
            return False
        known = self._known.get(address)
        if known is None:
            known = self._check(address)
            if len(self._known) >= _CACHE_LIMIT:
                self._known.clear()
            self._known[address] = known
        return known

    def _check(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.partition("%")[0])
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def __repr__(self) -> str:
        return f"trusted_peers({', '.join(repr(str(n)) for n in self.networks)})"


def trusted_peers(*networks: str) -> TrustedPeers:
    """A ``trust_priority`` believing clients whose address is in ``networks``.

    ``trusted_peers("10.0.0.0/8", "127.0.0.1")``: addresses or CIDR networks,
    IPv4 or IPv6. The address checked is :attr:`ClientInfo.address`: the
    peer's, or the one a trusted ``forwarded_header`` names.
    """
    if not networks:
        raise ConfigError("networks must name at least one address or network")
    parsed = []
    for network in networks:
        if not isinstance(network, str):
            raise ConfigError(f"networks must be strings like '10.0.0.0/8'; got {network!r}")
        try:
            parsed.append(ipaddress.ip_network(network.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"networks must be IP addresses or CIDR networks; got {network!r}"
            ) from None
    return TrustedPeers(parsed)
