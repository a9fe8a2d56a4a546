"""Resilience policies as server guards: who the client is, and what a guard refuses.

The shared core runs every guard, in order, after admission (headers, load
shedding) and before the handler:

==================  ===========================================================
guard               a request it refuses gets
==================  ===========================================================
``RateLimiter``     429 + ``Retry-After`` = the limiter's wait, rounded up
``Bulkhead``        503 (the permit is held until the request ends, however)
``CircuitBreaker``  503 + ``Retry-After`` = seconds until it lets a probe in
==================  ===========================================================

None of these carries ``X-Do-Not-Retry``: retrying after ``Retry-After`` is
exactly what the client should do. A keyed limiter's ``key`` function is
called with the request's *client identity* (``client_key``'s result; by
default the peer address), so ``RateLimiter("10/s", key=str)`` limits each
client on its own; an unkeyed one is one bucket for everyone.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Final, final

from .._errors import AioClientError, CircuitOpenError, ConfigError
from .._server_events import ClientInfo
from ..policies._breaker import BreakerTicket, CircuitBreaker
from ..policies._bulkhead import Bulkhead
from ..policies._errors import BulkheadFullError, RateLimitedError
from ..policies._rate_limit import RateLimiter

__all__ = [
    "ClientInfo",
    "Guard",
    "GuardRefusal",
    "Passage",
    "RouteRefusedError",
    "ServerGuards",
    "forwarded_address",
    "peer_address",
]

_log: Final = logging.getLogger("aio_client.server")

#: A policy usable as a server guard.
Guard = RateLimiter | Bulkhead | CircuitBreaker


def peer_address(client: ClientInfo, /) -> Hashable:
    """The default ``client_key``: :attr:`ClientInfo.address`."""
    return client.address


@final
@dataclass(frozen=True, slots=True)
class GuardRefusal:
    """A guard said no; the core turns this into the response and the outcome."""

    #: 429 (rate limit) or 503 (bulkhead, open breaker).
    status: int
    #: Seconds the client should wait, or ``None`` (no ``Retry-After``).
    retry_after: float | None
    #: The response body.
    body: bytes


@final
class RouteRefusedError(AioClientError):
    """A route's guard refused the request; the middleware answers it (429 / 503).

    Raised inside the handler's call by :func:`guarded` and
    :func:`guard_dependency`; carries the answer the app-wide guards would give.
    """

    def __init__(self, refusal: GuardRefusal) -> None:
        super().__init__(refusal.body.decode().strip(), may_have_reached_server=False)
        #: The status, ``Retry-After`` and body to answer with.
        self.refusal = refusal


@final
@dataclass(slots=True, eq=False)
class Passage:
    """What a request let through holds: bulkhead permits and breaker tickets.

    :meth:`close` gives every permit back and settles the breakers'
    tickets; it is idempotent, so the core can call it from ``finally``.
    """

    bulkheads: list[Bulkhead] = field(default_factory=list)
    tickets: list[BreakerTicket] = field(default_factory=list)
    unsettled: list[BreakerTicket] = field(default_factory=list)

    def close(self, failed: bool | None) -> bool:
        """Release everything; ``failed`` is the outcome (``None``: neither, e.g. cancelled).

        Returns whether breakers have async listeners waiting for :meth:`settle`.
        """
        bulkheads, self.bulkheads = self.bulkheads, []
        for bulkhead in reversed(bulkheads):
            bulkhead.release()
        tickets, self.tickets = self.tickets, []
        notify = False
        for ticket in tickets:
            if failed is None:
                ticket.released()
            elif failed:
                notify |= ticket.failed()
            else:
                notify |= ticket.succeeded()
            if ticket.waiting:
                self.unsettled.append(ticket)
        return notify

    async def settle(self) -> None:
        """Await the breakers' async state listeners (never while cancelled)."""
        tickets, self.unsettled = self.unsettled, []
        for ticket in tickets:
            await ticket.notify()


@final
class ServerGuards:
    """The guards of one app, and how it tells clients apart (see the module docstring).

    - ``guards``: :class:`~aio_client.policies.RateLimiter`,
      :class:`~aio_client.policies.Bulkhead` or
      :class:`~aio_client.policies.CircuitBreaker` objects, applied in order.
      A request refused by one has still passed (and spent a token of) the
      ones before it. A breaker counts 5xx answers and exceptions without an
      HTTP status as failures, other answers as successes, and a request
      cancelled (deadline, disconnect, shutdown) as neither; its
      ``expected_exception`` and ``fallback`` do not apply here.
    - ``client_key``: the client identity from a :class:`ClientInfo`
      (default :func:`peer_address`). One that raises falls back to the default.
    - ``forwarded_header``: a header to take the client's address from
      (``"x-forwarded-for"``, or ``"forwarded"`` for RFC 7239), its left-most
      address. Only for apps behind a proxy that sets it: any client can
      send one, so none is trusted unless named here.
    """

    __slots__ = ("client_key", "forwarded_header", "guards", "needs_headers")

    def __init__(
        self,
        guards: Sequence[Guard],
        *,
        client_key: Callable[[ClientInfo], Hashable] | None = None,
        forwarded_header: str | None = None,
    ) -> None:
        if isinstance(guards, (str, bytes)) or not isinstance(guards, Sequence):
            raise ConfigError(f"guards must be a sequence of policies; got {guards!r}")
        for guard in guards:
            if not isinstance(guard, (RateLimiter, Bulkhead, CircuitBreaker)):
                raise ConfigError(
                    "guards must hold RateLimiter, Bulkhead or CircuitBreaker objects; "
                    f"got {guard!r}"
                )
        if client_key is not None and not callable(client_key):
            raise ConfigError(f"client_key must be a function of a ClientInfo; got {client_key!r}")
        if forwarded_header is not None and (
            not isinstance(forwarded_header, str) or not forwarded_header.strip()
        ):
            raise ConfigError(
                f"forwarded_header must be a header name or None; got {forwarded_header!r}"
            )
        #: The guards, in the order they run.
        self.guards: tuple[Guard, ...] = tuple(guards)
        #: Function from a :class:`ClientInfo` to the client identity.
        self.client_key = client_key or peer_address
        #: The trusted forwarding header (lower case), or ``None``.
        self.forwarded_header = (
            None if forwarded_header is None else forwarded_header.strip().lower()
        )
        #: Whether ``client_key`` is custom (and may want the headers).
        self.needs_headers = client_key is not None

    def identify(self, client: ClientInfo) -> Hashable:
        """The client identity of ``client`` (never raises)."""
        try:
            return self.client_key(client)
        except Exception:
            _log.exception("client_key raised; keying the request by its address instead")
            return client.address

    async def enter(self, client: ClientInfo) -> Passage | GuardRefusal:
        """Pass every guard in order, or be refused by one (holding nothing then).

        Waiting (a bulkhead's queue, a limiter's ``max_wait``) happens here,
        under the caller's cancel scope; a cancelled wait holds nothing.
        """
        passage = Passage()
        identity: Hashable = None
        identified = False
        try:
            for guard in self.guards:
                if isinstance(guard, RateLimiter):
                    key: Hashable = None
                    if guard._key is not None:
                        if not identified:
                            identity, identified = self.identify(client), True
                        key = _limiter_key(guard, identity)
                    try:
                        await guard.acquire(key)
                    except RateLimitedError as exc:
                        passage.close(None)
                        return GuardRefusal(429, exc.retry_after, b"rate limited; retry later\n")
                elif isinstance(guard, Bulkhead):
                    try:
                        await guard.acquire()
                    except BulkheadFullError:
                        passage.close(None)
                        return GuardRefusal(503, None, b"at capacity; retry later\n")
                    passage.bulkheads.append(guard)
                else:
                    try:
                        ticket = guard.admit()
                    except CircuitOpenError as exc:
                        passage.close(None)
                        return GuardRefusal(503, exc.retry_after, b"circuit open; retry later\n")
                    passage.tickets.append(ticket)
        except BaseException:
            passage.close(None)
            raise
        return passage


def _limiter_key(limiter: RateLimiter, identity: Hashable) -> Hashable:
    key = limiter._key
    assert key is not None
    try:
        return key(identity)
    except Exception:
        _log.exception("a rate limiter's key function raised; using the client identity")
        return identity


def forwarded_address(header: str, value: str) -> str | None:
    """The left-most client address in a forwarding header's value, or ``None``.

    ``header`` is the header's lower-case name: ``forwarded`` is read as RFC
    7239 (``for=``), any other (``x-forwarded-for``, ``x-real-ip``) as a
    comma-separated list of addresses. Ports and IPv6 brackets are dropped;
    anything that is not an IP address gives ``None`` (so a garbage header
    cannot mint unbounded identities).
    """
    first = value.split(",", 1)[0].strip()
    if header == "forwarded":
        found = None
        for pair in first.split(";"):
            name, _, param = pair.partition("=")
            if name.strip().lower() == "for":
                found = param.strip().strip('"')
                break
        if found is None:
            return None
        first = found
    return _ip(first)


def _ip(text: str) -> str | None:
    candidates = [text]
    if text.startswith("["):  # "[2001:db8::1]:8080"
        candidates = [text[1:].partition("]")[0]]
    elif text.count(":") == 1:  # "203.0.113.7:8080"
        candidates.append(text.partition(":")[0])
    for candidate in candidates:
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return None
