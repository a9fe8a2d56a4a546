"""Testing your own code that calls services through aio_client.

Three pieces, none of which needs a network or a test-only dependency:

- :class:`ScriptedTransport` answers from a script — responses, errors and
  delays, per call and per route — and records every request it was sent;
- :class:`VirtualTimeLoop` is an asyncio event loop whose clock jumps ahead
  whenever nothing but a timer can wake it, so deadline, retry and breaker
  tests take no real time;
- :class:`ChaosTransport` wraps any transport and, seeded, turns a share of
  its exchanges into 5xx answers, connection resets, stalls and slow tails.

A client over ``ScriptedTransport`` runs its real pipeline (deadline,
strategy, budget, breaker, metrics): only the wire is scripted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import random
import selectors
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar, TypeVarTuple, final

import anyio

from ._errors import ConfigError, NetworkError
from ._models import Request, Response
from .transports._base import Transport

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

__all__ = ["ChaosTransport", "Delayed", "ScriptedTransport", "Step", "VirtualTimeLoop"]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")


_OK: Final = Response(200)


@final
@dataclass(frozen=True, slots=True)
class Delayed:
    """A script step that waits ``seconds`` (on the event loop's clock), then plays ``then``.

    ``Delayed(math.inf)`` never answers: the call ends only when its deadline cancels it.
    """

    #: Seconds to wait before ``then``; ``math.inf`` stalls until cancelled.
    seconds: float
    #: What happens after the wait: a response to answer or an exception to raise.
    then: Response | BaseException = _OK

    def __post_init__(self) -> None:
        if not self.seconds >= 0.0:  # also refuses NaN
            raise ConfigError(f"Delayed(seconds=) must be >= 0 seconds; got {self.seconds!r}")
        if not isinstance(self.then, Response | BaseException):
            raise ConfigError(
                f"Delayed(then=) must be a Response or an exception; got {self.then!r}"
            )


#: One scripted exchange: answer a response, raise an exception, or wait first.
Step = Response | BaseException | Delayed


@final
class ScriptedTransport:
    """A transport that plays back a script, one step per request, and records the requests.

    ``ScriptedTransport(*steps)`` answers every request from ``steps`` in
    order; ``routes={"GET users/{id}": [...], "orders": [...]}`` gives a route
    (``"METHOD template"`` or just ``"template"``, the template the request was
    built from) a script of its own, and ``steps`` then serve what no route
    matches. In every script the last step repeats. A request no script
    covers raises :class:`LookupError` naming it, which fails your test.

    ``requests`` holds every request as sent (absolute URL and the
    ``X-Request-Timeout``/``X-Request-Priority``/``X-Request-Attempt`` headers
    the client stamped), ``arrivals`` the event loop time each arrived. An
    exception step raises a fresh copy each time it plays.
    """

    __slots__ = ("_default", "_played", "_routes", "arrivals", "requests")

    def __init__(self, *steps: Step, routes: Mapping[str, Sequence[Step]] | None = None) -> None:
        self._default = _checked(steps, "steps")
        self._routes = {
            key: _checked(script, f"routes[{key!r}]") for key, script in (routes or {}).items()
        }
        if not self._routes and not self._default:
            raise ConfigError("ScriptedTransport needs steps or routes= (got neither)")
        self._played: Counter[str | None] = Counter()
        #: Every request sent, in arrival order.
        self.requests: list[Request] = []
        #: The event loop time (seconds) each request arrived.
        self.arrivals: list[float] = []

    def sent(self, route: str) -> list[Request]:
        """The requests sent to ``route`` (``"METHOD template"`` or ``"template"``)."""
        return [request for request in self.requests if _matches(route, request)]

    async def send(self, request: Request, /) -> Response:
        """Play the next step of the script ``request`` falls under."""
        self.requests.append(request)
        self.arrivals.append(anyio.current_time())
        key = next((key for key in self._routes if _matches(key, request)), None)
        script = self._routes[key] if key is not None else self._default
        if not script:
            raise LookupError(
                f"ScriptedTransport has no script for {request.method} {request.route or '/'} "
                f"({request.url}); scripted routes: {sorted(self._routes)}"
            )
        index = min(self._played[key], len(script) - 1)
        self._played[key] += 1
        return await _play(script[index])

    async def aclose(self) -> None:
        """Nothing to release."""


def _checked(steps: Sequence[Step], name: str) -> tuple[Step, ...]:
    for step in steps:
        if not isinstance(step, Response | BaseException | Delayed):
            raise ConfigError(
                f"ScriptedTransport {name} must hold Response, exception or Delayed steps; "
                f"got {step!r}"
            )
    return tuple(steps)


def _matches(key: str, request: Request) -> bool:
    method, _, route = key.rpartition(" ")
    return route == request.route and (not method or method.upper() == request.method)


async def _play(step: Step) -> Response:
    if isinstance(step, Delayed):
        await anyio.sleep(step.seconds)
        step = step.then
    if isinstance(step, BaseException):
        raise _fresh(step)
    return step


def _fresh(exc: BaseException) -> BaseException:
    # A new instance with the same arguments and attributes, built without calling
    # __init__ (whose signature may not take args back): each play gets a clean
    # traceback and attempt history.
    cls = type(exc)
    try:
        new = cls.__new__(cls, *exc.args)
        new.__dict__.update(vars(exc))
    except (TypeError, AttributeError):  # pragma: no cover - exotic exception types
        return exc
    return new


# -- virtual time ------------------------------------------------------------------------


@final
class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop on a virtual clock, for fast deadline and retry tests.

    When every task waits and nothing but a timer can wake the loop (no socket,
    pipe or subprocess of yours is open), the clock jumps to the next timer at
    once: ``await anyio.sleep(30)`` returns immediately with
    ``anyio.current_time()`` 30 s later, and so do deadlines, retry delays,
    hedge delays and breaker break durations. While a socket of yours is open
    it waits in real time (and the clock follows), so real servers still work.
    While a function given to ``loop.run_in_executor`` (or ``asyncio.to_thread``) runs,
    the clock runs in real time too; threads started otherwise (``anyio.to_thread``,
    Starlette's sync endpoints) do not hold it back, so a test with such work should run on
    a real loop.

    Use it as a loop factory: ``anyio.run(main, backend_options={"loop_factory":
    VirtualTimeLoop})``, or in pytest with anyio's plugin::

        @pytest.fixture
        def anyio_backend():
            return "asyncio", {"loop_factory": VirtualTimeLoop}

    (On trio, ``trio.testing.MockClock(autojump_threshold=0)`` does the same.)
    """

    def __init__(self, start: float = 0.0) -> None:
        self._virtual_now = float(start)
        self._in_threads = 0
        selector = _VirtualSelector(self)
        super().__init__(selector)
        # What the loop registered for itself (its wake-up pipe): only that open means
        # no socket of the program's can wake the loop, so time may jump.
        selector.own = frozenset(key.fd for key in selector.get_map().values())

    def time(self) -> float:
        """Seconds on the virtual clock."""
        return self._virtual_now

    def run_in_executor(
        self,
        executor: concurrent.futures.Executor | None,
        func: Callable[[*_Ts], _T],
        *args: *_Ts,
    ) -> asyncio.Future[_T]:
        """As asyncio's; while the function runs in its thread, the clock runs in real time."""
        future = super().run_in_executor(executor, func, *args)
        self._in_threads += 1
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, future: asyncio.Future[Any]) -> None:
        self._in_threads -= 1

    def _advance(self, seconds: float) -> None:
        self._virtual_now += seconds


# Longest a single jump may be; the loop asks again after it (asyncio caps waits at a day).
_MAX_JUMP: Final = 86400.0


class _VirtualSelector(selectors.BaseSelector):
    """The platform's selector, except that a wait no socket can end is skipped."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._real = selectors.DefaultSelector()
        self._loop = loop
        self.own: frozenset[int] = frozenset()

    def register(
        self, fileobj: FileDescriptorLike, events: int, data: object = None
    ) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(
        self, fileobj: FileDescriptorLike, events: int, data: object = None
    ) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_map(self) -> Mapping[FileDescriptorLike, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        idle = self._loop._in_threads == 0
        if (
            idle
            and timeout is not None
            and {key.fd for key in self._real.get_map().values()} <= self.own
        ):
            self._loop._advance(min(timeout, _MAX_JUMP))
            return []
        # A socket of the program's (or nothing at all) may end the wait: wait for real.
        started = time.monotonic()
        ready = self._real.select(timeout)
        self._loop._advance(time.monotonic() - started)
        return ready


# -- chaos -------------------------------------------------------------------------------


@final
class ChaosTransport:
    """Wraps a transport and, seeded, makes a share of its exchanges go wrong.

    Each request draws once: with probability ``error_rate`` it is answered
    ``error_status`` (503) without reaching the inner transport; with
    ``reset_rate`` the inner transport serves it and the answer is lost to a
    :class:`~aio_client.NetworkError` (the server did the work: a retry repeats
    it); with ``stall_rate`` it never answers, until the call's deadline
    cancels it. The three are exclusive (their sum is at most 1). Independently,
    with ``slow_rate`` it first waits a uniform ``slow_min``..``slow_max``
    seconds (a slow tail). ``seed`` makes the sequence of draws repeat;
    ``injected`` counts what was done (``"error"``, ``"reset"``, ``"stall"``,
    ``"slow"``). The inner transport is closed with this one.
    """

    __slots__ = (
        "_error_rate",
        "_error_status",
        "_inner",
        "_random",
        "_reset_rate",
        "_slow_max",
        "_slow_min",
        "_slow_rate",
        "_stall_rate",
        "injected",
    )

    def __init__(
        self,
        transport: Transport,
        *,
        seed: int = 0,
        error_rate: float = 0.0,
        error_status: int = 503,
        reset_rate: float = 0.0,
        stall_rate: float = 0.0,
        slow_rate: float = 0.0,
        slow_min: float = 0.1,
        slow_max: float = 0.5,
    ) -> None:
        for name, rate in (
            ("error_rate", error_rate),
            ("reset_rate", reset_rate),
            ("stall_rate", stall_rate),
            ("slow_rate", slow_rate),
        ):
            if not 0.0 <= rate <= 1.0:
                raise ConfigError(f"ChaosTransport {name}= must be from 0 to 1; got {rate!r}")
        if error_rate + reset_rate + stall_rate > 1.0:
            raise ConfigError(
                "ChaosTransport error_rate + reset_rate + stall_rate must be at most 1; got "
                f"{error_rate + reset_rate + stall_rate!r}"
            )
        if not 500 <= error_status <= 599:
            raise ConfigError(
                f"ChaosTransport error_status= must be a 5xx status; got {error_status!r}"
            )
        if not 0.0 <= slow_min <= slow_max or not math.isfinite(slow_max):
            raise ConfigError(
                "ChaosTransport needs 0 <= slow_min <= slow_max (finite seconds); got "
                f"slow_min={slow_min!r}, slow_max={slow_max!r}"
            )
        self._inner = transport
        self._random = random.Random(seed)
        self._error_rate = error_rate
        self._error_status = error_status
        self._reset_rate = reset_rate
        self._stall_rate = stall_rate
        self._slow_rate = slow_rate
        self._slow_min = slow_min
        self._slow_max = slow_max
        #: How many of each fault were injected so far.
        self.injected: Counter[str] = Counter()

    async def send(self, request: Request, /) -> Response:
        """Send ``request`` through the inner transport, or fail it as the draw says."""
        draw = self._random.random()
        slow = self._random.random() < self._slow_rate
        delay = self._random.uniform(self._slow_min, self._slow_max)
        if slow:
            self.injected["slow"] += 1
            await anyio.sleep(delay)
        if draw < self._error_rate:
            self.injected["error"] += 1
            return Response(self._error_status, {"content-type": "text/plain"}, b"chaos\n")
        draw -= self._error_rate
        if draw < self._reset_rate:
            self.injected["reset"] += 1
            await self._inner.send(request)
            raise NetworkError(
                "connection reset by peer after the request was served (ChaosTransport)",
                may_have_reached_server=True,
            )
        draw -= self._reset_rate
        if draw < self._stall_rate:
            self.injected["stall"] += 1
            await anyio.sleep_forever()
        return await self._inner.send(request)

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self._inner.aclose()
