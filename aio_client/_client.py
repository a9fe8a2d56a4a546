"""The client: configuration, the pipeline fold, and ``request()``."""

from __future__ import annotations

import inspect
import itertools
from asyncio import AbstractEventLoop, CancelledError, _get_running_loop, current_task
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final, TypedDict, Unpack, final

import anyio

from . import _clock
from ._body import StreamBody
from ._call import _ATTEMPT, Call, CallSettings
from ._classifier import Classifier, Verdict, default_classifier
from ._deadline import (
    Deadline,
    _ambient,
    reset_ambient,
    set_ambient,
)
from ._errors import (
    AioClientError,
    ConfigError,
    ConnectError,
    DeadlineExceededError,
    InvalidRequestError,
)
from ._events import (
    RESPONSE,
    BreakerChanged,
    CallFinished,
    CallStarted,
    CallWatcher,
    Observer,
    ending_of,
    hook_failed,
    overrides,
)
from ._fan_out import FanOut, _Settings
from ._headers import HeadersInput
from ._models import JSON, ContentInput, QueryInput, Request, Response
from ._models import request as build_request
from ._pipeline import Stage, compose
from ._priority import Priority
from ._size_limit import (
    CLIENT_DEFAULT,
    DEFAULT_MAX_RESPONSE_SIZE,
    UseClientDefault,
    validate_max_size,
)
from ._stream import OpenedBodies, StreamedResponse
from ._timer import DeadlineTimer
from ._validation import validate_endpoint, validate_strategy, validate_timeout
from .policies._breaker import CircuitBreaker
from .policies._stage import CircuitBreakerStage
from .strategies._budget import RetryBudget
from .strategies._sequential import sequential_strategy

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Iterable
    from types import TracebackType

    from ._circuit_state import CircuitState, NamedBreaker
    from ._siblings import Siblings
    from .strategies._base import Strategy
    from .transports._base import BodyStream, Transport

__all__ = [
    "Client",
    "EndpointProvider",
    "RequestContext",
    "RequestOptions",
    "RequestWithBodyOptions",
    "StreamContext",
]

#: A base URL, or a function (sync or async) returning one or several: service discovery.
EndpointProvider = Callable[[], "str | Sequence[str] | Awaitable[str | Sequence[str]]"]

_IDEMPOTENCY_KEY: Final = "idempotency-key"
# What client.get(...) and friends hand to the request builder; the rest go to request().
_BUILDER_OPTIONS: Final = frozenset({"path_params", "query", "headers", "json", "content"})
_CALL_OPTIONS: Final = frozenset(
    {"timeout", "deadline", "priority", "strategy", "idempotent", "max_response_size"}
)
_CALL_NAMES: Final = {
    method: f"Client.{method.lower()}"
    for method in ("GET", "HEAD", "OPTIONS", "DELETE", "POST", "PUT", "PATCH")
}


class RequestOptions(TypedDict, total=False):
    """Keyword options of ``client.get/head/options/delete(path, ...)``."""

    path_params: Mapping[str, str | int] | None
    query: QueryInput | None
    headers: HeadersInput | None
    timeout: float | None
    deadline: Deadline | None
    priority: Priority | str | None
    strategy: Strategy | None
    idempotent: bool | None
    max_response_size: int | UseClientDefault | None


class RequestWithBodyOptions(RequestOptions, total=False):
    """Keyword options of ``client.post/put/patch(path, ...)``: a body as well."""

    json: JSON
    content: ContentInput | None


_tuple_new = tuple.__new__

# The call pipeline is folded once and shared; the call in progress rides here.
_CURRENT: ContextVar[tuple[Call, Strategy]] = ContextVar("aio_client_call")
# A streaming transport's open(request).
Opener = Callable[[Request], Awaitable[tuple[Response, "BodyStream"]]]
# Where a streamed call's attempts leave the bodies they opened (hedges see it too).
_OPENED: ContextVar[OpenedBodies | None] = ContextVar("aio_client_opened", default=None)


@final
class Client:
    """A resilient HTTP client bound to one service (endpoint).

    ``Client(transport, endpoint, ...)``; use as ``async with`` or call
    :meth:`aclose`. Each :meth:`request` runs through, in order:

    1. the **deadline**: ``min(explicit, inherited ambient, client default)``;
       nothing is sent when less than ``low_timeout`` seconds remain;
    2. the **priority**: explicit, else inherited, else the client's;
    3. ``stages`` (yours; once per call, outermost first);
    4. the **strategy**, which runs attempts; each attempt goes to an endpoint,
       carries ``X-Request-Timeout``/``X-Request-Priority``/``X-Request-Attempt``,
       and passes through ``attempt_stages`` (yours) to the transport.

    Settings (seconds are floats):

    - ``timeout``: default budget of a call (20 s).
    - ``priority``: default priority (``Priority.NORMAL``).
    - ``strategy``: default strategy (``sequential_strategy()``: 3 attempts).
    - ``budget``: the retry budget shared by every call of this client.
    - ``classifier``: decides success / retryable / final per outcome.
    - ``circuit_breaker``: a :class:`~aio_client.CircuitBreaker` used as
      the template of one breaker per endpoint; each attempt passes through the
      breaker of the endpoint it goes to, and a refusal moves the next attempt
      to another endpoint (or ends the call when every endpoint refused).
    - ``observers``: metrics, tracing and logging sinks (:class:`aio_client.metrics.Observer`):
      each hears every call's events (start, attempts, refused retries and hedges,
      end) and the circuit breakers' state changes.
    - ``low_timeout``: below this budget an attempt is not sent (5 ms).
    - ``max_response_size``: the most bytes of (decoded) body a response may
      have (64 MiB); ``None`` for no limit. A larger one raises
      :class:`~aio_client.ResponseTooLargeError` (refused before reading when
      ``Content-Length`` says so) and its connection is closed.
    """

    __slots__ = (
        "_call_pipeline",
        "_closed",
        "_endpoints",
        "_low_timeout",
        "_observers",
        "_opener",
        "_priority",
        "_provider",
        "_rotation",
        "_settings",
        "_strategy",
        "_stream_settings",
        "_timeout",
        "_timer",
        "_transport",
    )

    def __init__(
        self,
        transport: Transport,
        endpoint: str | EndpointProvider,
        *,
        timeout: float = 20.0,
        priority: Priority | str = Priority.NORMAL,
        strategy: Strategy | None = None,
        budget: RetryBudget | None = None,
        classifier: Classifier = default_classifier,
        stages: Sequence[Stage] = (),
        attempt_stages: Sequence[Stage] = (),
        circuit_breaker: CircuitBreaker | None = None,
        observers: Sequence[Observer] = (),
        low_timeout: float = 0.005,
        max_response_size: int | None = DEFAULT_MAX_RESPONSE_SIZE,
    ) -> None:
        if not callable(getattr(transport, "send", None)):
            raise ConfigError(f"transport must have an async send(request); got {transport!r}")
        self._transport = transport
        if isinstance(endpoint, str):
            self._endpoints: tuple[str, ...] = (validate_endpoint(endpoint),)
            self._provider: EndpointProvider | None = None
        elif callable(endpoint):
            self._endpoints = ()
            self._provider = endpoint
        else:
            raise ConfigError(
                f"endpoint must be a base URL or a function returning one; got {endpoint!r}"
            )
        self._timeout = validate_timeout(timeout, "timeout")
        if self._timeout == 0:
            raise ConfigError("timeout must be > 0 seconds")
        self._priority = Priority.coerce(priority)
        self._strategy: Strategy = (
            sequential_strategy() if strategy is None else validate_strategy(strategy)
        )
        if budget is not None and not isinstance(budget, RetryBudget):
            raise ConfigError(f"budget must be a RetryBudget; got {budget!r}")
        if not callable(classifier):
            raise ConfigError(f"classifier must be callable; got {classifier!r}")
        self._low_timeout = validate_timeout(low_timeout, "low_timeout")
        if self._low_timeout >= self._timeout:
            raise ConfigError(
                f"low_timeout ({self._low_timeout} s) must be less than timeout "
                f"({self._timeout} s): no call would ever be sent"
            )
        self._rotation = itertools.count()
        self._closed = False
        self._timer: DeadlineTimer | None = None
        for observer in observers:
            if not isinstance(observer, Observer):
                raise ConfigError(
                    f"observers must be aio_client.metrics.Observer instances; got {observer!r}"
                )
        # Only observers that watch calls are asked at each call's start.
        self._observers = tuple(o for o in observers if overrides(o, Observer, "call_started"))
        inner: list[Stage] = list(attempt_stages)
        if circuit_breaker is not None:
            if not isinstance(circuit_breaker, CircuitBreaker):
                raise ConfigError(
                    f"circuit_breaker must be a CircuitBreaker; got {circuit_breaker!r}"
                )
            # Innermost: it judges exactly what the transport did, and the
            # caller's attempt stages still see its refusals.
            inner.append(CircuitBreakerStage(circuit_breaker))
            listening = tuple(o for o in observers if overrides(o, Observer, "breaker_changed"))
            if listening:
                circuit_breaker.add_listener(_BreakerRelay(listening))
        self._settings = CallSettings(
            compose(inner, transport.send),
            classifier,
            budget if budget is not None else RetryBudget(),
            self._low_timeout,
            validate_max_size(max_response_size, "max_response_size"),
        )
        self._call_pipeline = compose(stages, self._run_strategy) if stages else None
        # Streamed calls run the same attempt stages over the transport's open().
        self._stream_settings: CallSettings | None = None
        self._opener: Opener | None = getattr(transport, "open", None)
        if callable(self._opener):
            self._stream_settings = CallSettings(
                compose(inner, self._open_attempt),
                classifier,
                self._settings.budget,
                self._low_timeout,
                None,
            )

    # -- public API --------------------------------------------------------

    def request(
        self,
        request: Request,
        *,
        timeout: float | None = None,
        deadline: Deadline | None = None,
        priority: Priority | str | None = None,
        strategy: Strategy | None = None,
        idempotent: bool | None = None,
        max_response_size: int | UseClientDefault | None = CLIENT_DEFAULT,
    ) -> RequestContext:
        """Send ``request``; await the result or use it as ``async with``.

        - ``timeout`` (seconds) / ``deadline``: this call's budget; the nearest of
          them, the inherited ambient deadline and the client's ``timeout`` wins
          (the client's setting is a ceiling, never extended per call).
        - ``priority``: this call's priority.
        - ``strategy``: this call's strategy instead of the client's.
        - ``idempotent``: ``True`` lets a POST/PATCH be retried or hedged;
          ``False`` forbids repeating even a GET. By default, GET, HEAD,
          OPTIONS, PUT, DELETE and requests with an ``Idempotency-Key`` header
          may be repeated.
        - ``max_response_size``: this call's size limit (bytes of decoded body;
          ``None``: no limit) instead of the client's.

        Returns the final response, whatever its status (see
        :meth:`Response.raise_for_status`); raises a typed error, carrying every
        attempt's history, when no response was had.
        """
        return RequestContext(
            self._send(
                request, timeout, deadline, priority, strategy, idempotent, max_response_size
            )
        )

    def stream(
        self,
        request: Request,
        *,
        timeout: float | None = None,
        deadline: Deadline | None = None,
        priority: Priority | str | None = None,
        strategy: Strategy | None = None,
        idempotent: bool | None = None,
        max_size: int | None = None,
        idle_timeout: float | None = None,
    ) -> StreamContext:
        """Send ``request`` and read the response's body as it arrives::

            async with client.stream(aio_client.get("events")) as response:
                async for event in response.aiter_sse():
                    ...

        The options are :meth:`request`'s, and:

        - ``max_size``: the most bytes of (decoded) body to read; ``None``
          (the default) for no limit: the client's ``max_response_size`` is
          for buffered responses only.
        - ``idle_timeout``: seconds the body may go without a byte.

        The strategy races for the response head only: retries and hedges
        run until a head is accepted, the other attempts are cancelled and
        their connections closed, and nothing is repeated once body bytes
        were handed out. The call's deadline covers the whole exchange: a
        read past it (or past ``idle_timeout``) raises
        :class:`~aio_client.DeadlineExceededError`. Leaving the block, however
        it happens, closes the connection (or gives it back, when the body
        was read whole) before the block is left. Observers see one call that
        ends when the block does.
        """
        return StreamContext(
            self,
            (request, timeout, deadline, priority, strategy, idempotent),
            validate_max_size(max_size, "max_size"),
            _validate_idle_timeout(idle_timeout),
        )

    def fan_out(
        self,
        requests: Iterable[Request] | AsyncIterable[Request],
        *,
        concurrency: int = 10,
        rate: float | None = None,
        timeout: float | None = None,
        deadline: Deadline | None = None,
        min_success: int | None = None,
        fail_fast: bool = False,
        strategy: Strategy | None = None,
        priority: Priority | str | None = None,
        idempotent: bool | None = None,
        hedge_stragglers: bool = True,
    ) -> FanOut:
        """Send many requests as one fan-out; await the outcomes or read them as they end.

        ``await client.fan_out(requests, ...)`` returns one :class:`Response`
        or :class:`AioClientError` per request, in input order (never one
        exception for all); ``async with client.fan_out(...) as outcomes:``
        yields ``(index, outcome)`` as each call ends (see :class:`FanOut`).

        - ``requests``: a sequence, iterable or async iterable, pulled only when
          a call can start.
        - ``concurrency``: most calls in flight at once (10).
        - ``rate``: most calls started per second, evenly spaced (no limit).
        - ``timeout`` (seconds) / ``deadline``: the budget of the whole fan-out,
          also the ambient deadline every call inherits (nearest wins, as for
          :meth:`request`). A call in flight when it passes ends with its
          :class:`DeadlineExceededError`; one never started gets one with
          ``may_have_reached_server=False``.
        - ``min_success``: return as soon as this many calls got a 2xx response;
          the rest are cancelled (and awaited) and end with
          :class:`FanOutStoppedError`.
        - ``fail_fast``: stop at the first call that ends without a 2xx
          response; the rest end with :class:`FanOutStoppedError`.
        - ``strategy``, ``priority``, ``idempotent``: each call's, as for
          :meth:`request`. Retries and hedges draw from this client's budget.
        - ``hedge_stragglers``: with a hedging strategy, once every call has
          started and at most a tenth of them (at least one) are still running,
          a call whose newest attempt has run twice the median time its answered
          siblings took is hedged at once instead of at its strategy's delay
          (within the strategy's ``attempts`` and the retry budget). ``False``:
          the strategy's delays only.

        Cancelling the caller cancels every call; none runs after it returns.
        """
        if self._closed:
            raise RuntimeError("the client is closed")
        settings = _Settings(
            requests,
            self,
            concurrency=concurrency,
            rate=rate,
            timeout=timeout,
            deadline=deadline,
            min_success=min_success,
            fail_fast=fail_fast,
            strategy=strategy,
            priority=priority,
            idempotent=idempotent,
            hedge_stragglers=hedge_stragglers,
        )
        return FanOut(settings, "Client.fan_out")

    def get(self, path: str, /, **options: Unpack[RequestOptions]) -> RequestContext:
        """``request(aio_client.get(path, ...), ...)``: the options are the builder's
        (``path_params``, ``query``, ``headers``) and :meth:`request`'s."""
        return self._build_and_send("GET", path, options)

    def head(self, path: str, /, **options: Unpack[RequestOptions]) -> RequestContext:
        """A HEAD request; see :meth:`get`."""
        return self._build_and_send("HEAD", path, options)

    def options(self, path: str, /, **options: Unpack[RequestOptions]) -> RequestContext:
        """An OPTIONS request; see :meth:`get`."""
        return self._build_and_send("OPTIONS", path, options)

    def delete(self, path: str, /, **options: Unpack[RequestOptions]) -> RequestContext:
        """A DELETE request; see :meth:`get`."""
        return self._build_and_send("DELETE", path, options)

    def post(self, path: str, /, **options: Unpack[RequestWithBodyOptions]) -> RequestContext:
        """A POST request; ``json=`` or ``content=`` is its body; see :meth:`get`."""
        return self._build_and_send("POST", path, options)

    def put(self, path: str, /, **options: Unpack[RequestWithBodyOptions]) -> RequestContext:
        """A PUT request; see :meth:`post`."""
        return self._build_and_send("PUT", path, options)

    def patch(self, path: str, /, **options: Unpack[RequestWithBodyOptions]) -> RequestContext:
        """A PATCH request; see :meth:`post`."""
        return self._build_and_send("PATCH", path, options)

    def _build_and_send(
        self, method: str, path: str, options: Mapping[str, object]
    ) -> RequestContext:
        building: dict[str, Any] = {}
        calling: dict[str, Any] = {}
        for name, value in options.items():
            if name in _BUILDER_OPTIONS:
                building[name] = value
            elif name in _CALL_OPTIONS:
                calling[name] = value
            else:
                raise TypeError(
                    f"{method.lower()}() got an unexpected keyword argument {name!r}; "
                    f"expected some of {sorted(_BUILDER_OPTIONS | _CALL_OPTIONS)}"
                )
        context = self.request(build_request(method, path, **building), **calling)
        context._name(f"{_CALL_NAMES[method]}({path!r})")
        return context

    async def aclose(self) -> None:
        """Close the transport (it closes only what it owns).

        Calls still in flight end with the transport's error (the connection
        is closed under them), or at their deadlines, which still hold.
        """
        if not self._closed:
            self._closed = True
            # Attempts of calls still in flight (retries, hedges) are not sent.
            self._settings.send = _not_sent_closed
            if self._stream_settings is not None:
                self._stream_settings.send = _not_sent_closed
            if self._timer is not None and not self._timer.pending:
                self._timer.close()
            await self._transport.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def budget(self) -> RetryBudget:
        """The retry budget shared by this client's calls."""
        return self._settings.budget

    # -- the call ------------------------------------------------------------

    async def _send(
        self,
        request: Request,
        timeout: float | None,  # noqa: ASYNC109 - the edge where the call's budget is set
        deadline: Deadline | None,
        priority: Priority | str | None,
        strategy: Strategy | None,
        idempotent: bool | None,
        max_response_size: int | UseClientDefault | None,
        siblings: Siblings | None = None,
    ) -> Response:
        # The steps of ARCHITECTURE.md's diagram: deadline, priority, (observers),
        # call stages and strategy; the attempts' steps live in Call.attempt.
        if self._closed:
            raise RuntimeError("the client is closed")
        if not isinstance(request, Request):
            raise InvalidRequestError(
                f"request must be built with aio_client.get/post/...; got {request!r}"
            )
        loop = _get_running_loop()
        now = _clock.now() if loop is None else loop.time()
        inherited = _ambient.get()
        at = self._deadline_at(now, timeout, deadline, inherited.deadline)
        call = self._new_call(
            request,
            at,
            priority if priority is not None else inherited.priority,
            idempotent,
            self._endpoints or await self._resolve_endpoints(),
            _clock.now if loop is None else loop.time,
            self._settings,
            now,
        )
        if max_response_size is not CLIENT_DEFAULT:
            call.max_response_size = validate_max_size(max_response_size, "max_response_size")
        call.siblings = siblings
        chosen = self._strategy if strategy is None else validate_strategy(strategy)
        if request.content and request.content.__class__ is StreamBody:  # cheap when empty
            return await self._send_streamed_body(call, chosen, loop, now)
        watchers = self._call_started(call, now) if self._observers else None
        # Enforcement is inline here, on the path of every request() (a coroutine
        # frame of its own costs about 2% of a call); _enforced() is the same for
        # the rarer streamed calls.
        token = set_ambient(call.deadline, call.priority, inherited.origin)
        try:
            if loop is not None:
                timer = self._timer
                if timer is None or timer.loop is not loop:
                    timer = self._timer = DeadlineTimer(loop)
                task = current_task(loop)
                if task is None:
                    raise RuntimeError("aio_client needs to run inside a task")
                entry = timer.start(at, task)
                call.task = task
                call.timer = timer
                try:
                    response = await self._execute(call, chosen)
                except CancelledError:
                    if timer.finish(entry):
                        raise call.deadline_error() from None
                    raise
                finally:
                    timer.finish(entry)
            else:
                with anyio.CancelScope(deadline=at) as scope:
                    response = await self._execute(call, chosen)
                if scope.cancelled_caught:
                    raise call.deadline_error()
        except BaseException as exc:
            if watchers:
                _call_finished(call, watchers, now, None, exc)
            raise
        finally:
            reset_ambient(token)
        if watchers:
            _call_finished(call, watchers, now, response, None)
        return response

    async def _send_streamed_body(
        self, call: Call, strategy: Strategy, loop: AbstractEventLoop | None, now: float
    ) -> Response:
        """A call whose body is streamed: one attempt unless the body can be made again."""
        watchers = self._call_started(call, now) if self._observers else None
        try:
            with _once_unless_repeatable(call):
                response = await self._enforced(call, strategy, loop)
        except BaseException as exc:
            if watchers:
                _call_finished(call, watchers, now, None, exc)
            raise
        if watchers:
            _call_finished(call, watchers, now, response, None)
        return response

    def _deadline_at(
        self,
        now: float,
        timeout: float | None,
        deadline: Deadline | None,
        inherited: Deadline | None,
    ) -> float:
        """The call's deadline: the nearest of the explicit, inherited and default ones."""
        at = now + self._timeout
        if timeout is not None:
            at = min(at, now + validate_timeout(timeout))
        if deadline is not None:
            if not isinstance(deadline, Deadline):
                raise ConfigError(f"deadline must be a Deadline; got {deadline!r}")
            at = min(at, deadline.at)
        if inherited is not None and inherited.at < at:
            at = inherited.at
        if at - now < self._low_timeout:
            raise DeadlineExceededError(
                f"not sent: {max(at - now, 0.0) * 1000:.1f} ms left of the deadline",
                may_have_reached_server=False,
            )
        return at

    def _new_call(
        self,
        request: Request,
        at: float,
        priority: Priority | str | None,
        idempotent: bool | None,
        endpoints: tuple[str, ...],
        clock: Callable[[], float],
        settings: CallSettings,
        now: float,
    ) -> Call:
        """The call's state: its priority (given, else inherited, else the client's),
        whether it may be repeated, its place in the endpoint rotation."""
        prio = Priority.coerce(priority) if priority is not None else self._priority
        if idempotent is None:
            retries_allowed = request.idempotent_by_method or _IDEMPOTENCY_KEY in request.headers
        elif idempotent is True or idempotent is False:
            retries_allowed = idempotent
        else:
            raise ConfigError(f"idempotent must be True, False or None; got {idempotent!r}")
        budget = settings.budget
        if budget._on_loop_clock:
            budget._deposit_at(now)  # the loop's clock, read once per call
        else:
            budget.deposit()
        return Call(
            request,
            Deadline._trusted(at),
            prio,
            endpoints,
            next(self._rotation),
            retries_allowed,
            settings,
            clock,
        )

    async def _enforced(
        self, call: Call, strategy: Strategy, loop: AbstractEventLoop | None
    ) -> Response:
        """Run the call under its deadline, as the ambient deadline of everything inside."""
        at = call.deadline.at
        token = set_ambient(call.deadline, call.priority)
        try:
            if loop is not None:
                # On asyncio, one timer per client enforces every call's deadline
                # (see _timer.py); it cancels the task natively, which anyio's
                # task groups and scopes inside honour.
                timer = self._timer
                if timer is None or timer.loop is not loop:
                    timer = self._timer = DeadlineTimer(loop)
                task = current_task(loop)
                if task is None:
                    raise RuntimeError("aio_client needs to run inside a task")
                entry = timer.start(at, task)
                call.task = task
                call.timer = timer
                try:
                    return await self._execute(call, strategy)
                except CancelledError:
                    if timer.finish(entry):
                        raise call.deadline_error() from None
                    raise
                finally:
                    timer.finish(entry)
            with anyio.CancelScope(deadline=at) as scope:
                return await self._execute(call, strategy)
        finally:
            reset_ambient(token)
        if scope.cancelled_caught:  # pragma: no branch
            raise call.deadline_error()
        raise AssertionError("unreachable")  # pragma: no cover

    def _call_started(self, call: Call, now: float) -> tuple[CallWatcher, ...] | None:
        """Tell the observers a call starts; the watchers of its further events."""
        request = call.request
        # The events through tuple.__new__, as AttemptRecord is (Call._attempt_finished).
        event: CallStarted = _tuple_new(
            CallStarted, (request.method, request.route, call.deadline.at - now, call.priority)
        )
        watchers: tuple[CallWatcher, ...] = ()
        for observer in self._observers:
            try:
                watcher = observer.call_started(event)
            except Exception:
                hook_failed(observer.call_started)
                continue
            if watcher is not None:
                watchers += (watcher,)
        if not watchers:
            return None
        call.watch(watchers)
        return watchers

    async def _open_attempt(self, request: Request) -> Response:
        """A streamed call's attempt, under the attempt stages: send, keep the body aside."""
        assert self._opener is not None  # only streamed calls' pipeline ends here
        head, body = await self._opener(request)
        opened = _OPENED.get()
        attempt = _ATTEMPT.get()
        if opened is None or attempt is None:  # pragma: no cover - only client.stream() gets here
            await body.aclose()
            raise RuntimeError("a streamed attempt ran outside client.stream()")
        opened.add(attempt.number, body)
        return head

    async def _open_stream(self, context: StreamContext) -> StreamedResponse:
        """Run a streamed call's strategy until a response head wins; hand out its body."""
        request, timeout, deadline, priority, strategy, idempotent = context._args
        if self._closed:
            raise RuntimeError("the client is closed")
        settings = self._stream_settings
        if settings is None:
            raise ConfigError(
                f"the transport {type(self._transport).__name__} cannot stream responses: "
                "it has no open(request) method"
            )
        if not isinstance(request, Request):
            raise InvalidRequestError(
                f"request must be built with aio_client.get/post/...; got {request!r}"
            )
        # The same steps as _send's: deadline, call (kept apart so that request() stays lean).
        loop = _get_running_loop()
        clock = _clock.now if loop is None else loop.time
        now = clock()
        inherited = _ambient.get()
        at = self._deadline_at(now, timeout, deadline, inherited.deadline)
        call = self._new_call(
            request,
            at,
            priority if priority is not None else inherited.priority,
            idempotent,
            self._endpoints or await self._resolve_endpoints(),
            clock,
            settings,
            now,
        )
        chosen = self._strategy if strategy is None else validate_strategy(strategy)
        watchers = self._call_started(call, now) if self._observers else None
        context._call, context._start, context._clock, context._watchers = (
            call,
            now,
            clock,
            watchers,
        )
        opened = OpenedBodies()
        token = _OPENED.set(opened)
        try:
            with _once_unless_repeatable(call):
                head = await self._enforced(call, chosen, loop)
        except BaseException as exc:
            await opened.keep(None)
            if watchers:
                _call_finished(call, watchers, now, None, exc)
            raise
        finally:
            _OPENED.reset(token)
        body: BodyStream | None = await opened.keep(head.attempt)
        if body is None:  # an attempt stage answered itself: its response is all there is
            body = _WholeBody(head.content)
        response = StreamedResponse(
            head,
            body,
            deadline=call.deadline.at,
            idle_timeout=context._idle_timeout,
            max_size=context._max_size,
            now=clock,
        )
        try:
            response._check_announced_size()
        except BaseException as exc:
            await response.aclose()
            if watchers:
                _call_finished(call, watchers, now, None, exc)
            raise
        return response

    def _execute(self, call: Call, strategy: Strategy) -> Awaitable[Response]:
        # A plain function returning the awaitable: no extra coroutine frame per call.
        if self._call_pipeline is None:
            return strategy.execute(call)
        return self._run_pipeline(call, strategy)

    async def _run_pipeline(self, call: Call, strategy: Strategy) -> Response:
        assert self._call_pipeline is not None
        handler = self._call_pipeline
        token = _CURRENT.set((call, strategy))
        try:
            return await handler(call.request)
        finally:
            _CURRENT.reset(token)

    @staticmethod
    async def _run_strategy(request: Request) -> Response:
        call, strategy = _CURRENT.get()
        call.request = request
        inherited = _ambient.get().deadline
        if inherited is None or inherited.at >= call.deadline.at:
            return await strategy.execute(call)
        # A call stage shortened the deadline: policies.Timeout enforces it with a
        # cancel scope of its own, ambient() alone does not. The client enforces
        # every call's deadline, so transports may rely on it (see AttemptInfo.deadline).
        call.deadline = inherited
        with anyio.CancelScope(deadline=inherited.at):
            return await strategy.execute(call)
        raise call.deadline_error()  # the scope ran out

    async def _resolve_endpoints(self) -> tuple[str, ...]:
        assert self._provider is not None
        result = self._provider()
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, str):
            found: tuple[object, ...] = (result,)
        elif isinstance(result, Iterable):
            found = tuple(result)
        else:
            raise ConfigError(
                "the endpoint provider must return a base URL or an iterable of them; "
                f"got {result!r}"
            )
        if not found:
            raise ConfigError("the endpoint provider returned no endpoints")
        return tuple(validate_endpoint(item) for item in found)


async def _not_sent_closed(request: Request, /) -> Response:
    """A closed client's transport, for the attempts of calls still in flight."""
    raise ConnectError("not sent: the client is closed", may_have_reached_server=False)


# What a never-awaited client.request(...) is called in Python's warning (a
# coroutine takes its function's name when made); client.get(...) and friends
# rename theirs after the call.
Client._send.__qualname__ = "Client.request"


@final
class RequestContext(Coroutine[object, None, Response]):
    """What :meth:`Client.request` returns: awaitable once, or an async context manager.

    It holds the call's coroutine, made when the call is: nothing is sent until
    it is awaited (or entered), and one dropped without either warns with
    Python's ``RuntimeWarning`` "coroutine ... was never awaited", naming the
    call (``Client.post('users/{id}')``). It is a coroutine itself, so
    ``asyncio.create_task(client.get(...))`` (and a ``TaskGroup``'s) takes it.
    """

    __slots__ = ("_call",)

    def __init__(self, call: Coroutine[object, None, Response]) -> None:
        self._call = call

    def _name(self, name: str) -> None:
        # What the never-awaited warning shows; tracebacks keep the real function.
        self._call.__qualname__ = name  # type: ignore[attr-defined]  # set on the object

    def __await__(self) -> Generator[object, None, Response]:
        return self._call.__await__()

    # -- the coroutine protocol, for the event loop's tasks ---------------------------

    def send(self, value: None, /) -> object:
        """Run the call to its next suspension (what a task does)."""
        return self._call.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None, /) -> object:
        """Raise an exception (a cancellation) where the call is suspended."""
        if val is None and tb is None:
            return self._call.throw(typ)
        return self._call.throw(typ, val, tb)

    def close(self) -> None:
        """Close the call's coroutine."""
        self._call.close()

    async def __aenter__(self) -> Response:
        return await self._call

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The body is already read and the connection released: nothing to close.
        return None


@final
class StreamContext:
    """What :meth:`Client.stream` returns: an async context manager of a
    :class:`~aio_client.StreamedResponse`."""

    __slots__ = (
        "_args",
        "_call",
        "_client",
        "_clock",
        "_idle_timeout",
        "_max_size",
        "_response",
        "_start",
        "_watchers",
    )

    def __init__(
        self,
        client: Client,
        args: tuple[
            Request,
            float | None,
            Deadline | None,
            Priority | str | None,
            Strategy | None,
            bool | None,
        ],
        max_size: int | None,
        idle_timeout: float | None,
    ) -> None:
        self._client = client
        self._args = args
        self._max_size = max_size
        self._idle_timeout = idle_timeout
        self._response: StreamedResponse | None = None
        self._call: Call | None = None
        self._start = 0.0
        self._clock: Callable[[], float] = _clock.now
        self._watchers: tuple[CallWatcher, ...] | None = None

    async def __aenter__(self) -> StreamedResponse:
        if self._response is not None or self._call is not None:
            raise RuntimeError("a stream context can be entered once")
        self._response = await self._client._open_stream(self)
        return self._response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        response, self._response = self._response, None
        if response is None:
            return
        await response.aclose()
        call = self._call
        if self._watchers and call is not None:
            error = response._error if response._error is not None else exc
            head = response._head if error is None else None
            _call_finished(call, self._watchers, self._start, head, error)


@final
class _WholeBody:
    """A body already read (a response an attempt stage made), handed out at once."""

    __slots__ = ("_content",)

    def __init__(self, content: bytes) -> None:
        self._content = content

    async def receive(self) -> bytes:
        content, self._content = self._content, b""
        return content

    async def aclose(self) -> None:
        self._content = b""


@contextmanager
def _once_unless_repeatable(call: Call) -> Iterator[None]:
    """A body streamed from an iterable is sent once: no retries, no hedges for the
    call, and an error that would have been retried says why it was not."""
    content = call.request.content
    if not isinstance(content, StreamBody) or content.repeatable:
        yield
        return
    call.retries_allowed = False
    try:
        yield
    except AioClientError as exc:
        # A call out of time could not have been retried anyway: no note then.
        if not isinstance(exc, DeadlineExceededError) and call.classifier(exc) is Verdict.RETRY:
            exc.add_note(
                "not retried: the request body is an iterable, which can be sent once; pass "
                "content= a function returning a fresh iterable to let it be retried or hedged"
            )
        raise


def _validate_idle_timeout(value: float | None) -> float | None:
    if value is None:
        return None
    seconds = validate_timeout(value, "idle_timeout")
    if seconds == 0:
        raise ConfigError("idle_timeout must be > 0 seconds or None")
    return seconds


def _call_finished(
    call: Call,
    watchers: tuple[CallWatcher, ...],
    start: float,
    response: Response | None,
    error: BaseException | None,
) -> None:
    """Tell the call's watchers how it ended, last watcher first (as nested
    context managers exit)."""
    end = call.clock()
    if response is not None:
        status: int | None = response.status
        winner = response.attempt
        ending = RESPONSE
    else:
        assert error is not None
        status = None
        winner = 0
        ending = ending_of(error, end >= call.deadline.at)
    history = tuple(call.history)
    request = call.request
    event: CallFinished = _tuple_new(
        CallFinished,
        (
            request.method,
            request.route,
            history[0].endpoint if history else None,
            end - start,
            status,
            error,
            history,
            winner,
            ending,
        ),
    )
    for watcher in reversed(watchers):
        try:
            watcher.call_finished(event)
        except Exception:
            hook_failed(watcher.call_finished)


@final
class _BreakerRelay:
    """A circuit breaker listener telling observers of its state changes."""

    __slots__ = ("_observers",)

    def __init__(self, observers: tuple[Observer, ...]) -> None:
        self._observers = observers

    def __call__(self, breaker: NamedBreaker, old: CircuitState, new: CircuitState) -> None:
        event = BreakerChanged(breaker.name, old, new)
        for observer in self._observers:
            try:
                observer.breaker_changed(event)
            except Exception:
                hook_failed(observer.breaker_changed)
