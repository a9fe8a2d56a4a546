"""Fan-out: many calls under one deadline, bounded concurrency, every outcome kept.

One request often becomes tens or thousands of calls. ``asyncio.gather`` gives
them no shared deadline, no bound on concurrency, loses every result when one
call raises, and leaves the others running. A fan-out:

- pulls its calls lazily (a sequence, an iterable or an async iterable) and
  starts at most ``concurrency`` at once, at most ``rate`` per second;
- gives every call the fan-out's deadline as its ambient deadline, so none
  outlives it (each call keeps its client's own deadline rules, strategy and
  shared retry budget: hedges of a fan-out cannot multiply load);
- hands back one outcome per call, a :class:`Response` or an
  :class:`AioClientError`, in input order (``await``) or as they complete
  (``async with ... as outcomes``);
- can stop early at a quorum (``min_success``) or at the first failure
  (``fail_fast``), cancelling and awaiting the calls still running;
- ends every call it started before it returns, and is cancelled as a whole
  when its caller is.

Outcomes of calls that did not end on their own:

- the fan-out's deadline passed: a call in flight ends with the client's own
  :class:`DeadlineExceededError` (with its attempts); a call never started gets
  one with ``may_have_reached_server=False``;
- the fan-out stopped (``min_success`` reached, ``fail_fast``): a
  :class:`FanOutStoppedError` whose ``reason`` names the setting, with
  ``may_have_reached_server`` saying whether the call had started.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from asyncio import _get_running_loop
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Coroutine,
    Generator,
    Iterable,
    Iterator,
    Sequence,
)
from typing import TYPE_CHECKING, Literal, TypeAlias, TypeVar, cast, final

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from . import _clock
from ._deadline import Deadline, _ambient, nearest_deadline, reset_ambient, set_ambient
from ._errors import (
    AioClientError,
    ConfigError,
    DeadlineExceededError,
    FanOutStoppedError,
    InvalidRequestError,
)
from ._models import Request, Response
from ._priority import Priority
from ._siblings import Siblings
from ._size_limit import CLIENT_DEFAULT
from ._validation import positive_int, validate_strategy, validate_timeout

if TYPE_CHECKING:
    from types import TracebackType

    from anyio.abc import TaskGroup

    from ._client import Client
    from .strategies._base import Strategy

__all__ = ["FanOut", "Outcome", "fan_out"]

#: What each call of a fan-out ends with.
Outcome: TypeAlias = "Response | AioClientError"
#: One outcome, with the position of its call in the input.
Indexed: TypeAlias = "tuple[int, Outcome]"
StopReason: TypeAlias = Literal["min_success", "fail_fast"]
_T = TypeVar("_T")


@final
class _Settings:
    """A fan-out's validated settings; shared, read-only, by its runs."""

    __slots__ = (
        "client",
        "concurrency",
        "deadline",
        "fail_fast",
        "hedge_stragglers",
        "idempotent",
        "interval",
        "min_success",
        "priority",
        "source",
        "strategy",
        "timeout",
    )

    def __init__(
        self,
        source: object,
        client: Client | None,
        *,
        concurrency: int,
        rate: float | None,
        timeout: float | None,
        deadline: Deadline | None,
        min_success: int | None,
        fail_fast: bool,
        strategy: Strategy | None,
        priority: Priority | str | None,
        idempotent: bool | None,
        hedge_stragglers: bool,
    ) -> None:
        if not isinstance(source, (Iterable, AsyncIterable)) or isinstance(
            source, (str, bytes, Request)
        ):
            what = "requests" if client is not None else "calls"
            raise ConfigError(
                f"{what} must be an iterable or an async iterable; got {type(source).__name__}"
            )
        self.source: Iterable[object] | AsyncIterable[object] = source
        self.client = client
        self.concurrency = positive_int(concurrency, "concurrency")
        self.interval = 0.0 if rate is None else 1.0 / _rate(rate)
        self.timeout = None if timeout is None else validate_timeout(timeout)
        if deadline is not None and not isinstance(deadline, Deadline):
            raise ConfigError(f"deadline must be a Deadline; got {deadline!r}")
        self.deadline = deadline
        if min_success is not None:
            positive_int(min_success, "min_success")
            if isinstance(source, Sequence) and min_success > len(source):
                raise ConfigError(
                    f"min_success must be <= the number of calls ({len(source)}); got {min_success}"
                )
        self.min_success = min_success
        if not isinstance(fail_fast, bool):
            raise ConfigError(f"fail_fast must be True or False; got {fail_fast!r}")
        self.fail_fast = fail_fast
        self.strategy = None if strategy is None else validate_strategy(strategy)
        self.priority = None if priority is None else Priority.coerce(priority)
        if idempotent is not None and not isinstance(idempotent, bool):
            raise ConfigError(f"idempotent must be True, False or None; got {idempotent!r}")
        self.idempotent = idempotent
        if not isinstance(hedge_stragglers, bool):
            raise ConfigError(f"hedge_stragglers must be True or False; got {hedge_stragglers!r}")
        self.hedge_stragglers = hedge_stragglers


def fan_out(
    calls: Iterable[tuple[Client, Request]] | AsyncIterable[tuple[Client, Request]],
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
    """Run ``(client, request)`` calls, across one or several clients, as one fan-out.

    :meth:`Client.fan_out` with each call's client given alongside its request
    (replicas, shards, different services). Every setting is
    :meth:`Client.fan_out`'s; an item that is not a ``(Client, Request)`` pair
    ends with :class:`InvalidRequestError`.
    """
    settings = _Settings(
        calls,
        None,
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
    return FanOut(settings, "fan_out")


@final
class FanOut:
    """What :func:`fan_out` and :meth:`Client.fan_out` return: await it, or enter it.

    - ``outcomes = await client.fan_out(requests)``: a list with one
      :class:`Response` or :class:`AioClientError` per call, in input order.
      With a sequence, every item has one; with another iterable, the list
      stops at the last item pulled, since items after an early stop
      (deadline, ``min_success``, ``fail_fast``) are never pulled.
    - ``async with client.fan_out(requests) as outcomes:`` then
      ``async for index, outcome in outcomes:``: each call's outcome as it
      ends, with its position in the input. Leaving the block early cancels
      and awaits the calls still running. Only ``concurrency`` outcomes wait
      for the reader, so memory stays bounded however many calls there are.

    Use it once. Nothing runs until it is awaited or entered; one dropped
    without either warns ("coroutine ... was never awaited").
    """

    __slots__ = ("_group", "_outcomes", "_run", "_settings")

    def __init__(self, settings: _Settings, name: str) -> None:
        self._settings = settings
        self._run: Coroutine[object, None, list[Outcome]] = _in_order(settings)
        self._run.__qualname__ = name  # type: ignore[attr-defined]  # what the warning shows
        self._group: TaskGroup | None = None
        self._outcomes: MemoryObjectReceiveStream[Indexed] | None = None

    def __await__(self) -> Generator[object, None, list[Outcome]]:
        return self._run.__await__()

    async def __aenter__(self) -> AsyncIterator[Indexed]:
        if self._group is not None or inspect.getcoroutinestate(self._run) != "CORO_CREATED":
            raise RuntimeError("a fan-out runs once; make a new one")
        # Closing the never-started coroutine spends it: awaiting it later
        # fails, and it does not warn as never awaited.
        self._run.close()
        send, receive = anyio.create_memory_object_stream[Indexed](self._settings.concurrency)
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        self._outcomes = receive
        group.start_soon(_as_completed, self._settings, send)
        return receive

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._group is not None
        assert self._outcomes is not None
        # Whatever ended the block (all read, a break, an error), nothing outlives it.
        self._group.cancel_scope.cancel()
        try:
            # The block's own exception goes on as it is, not in a group.
            await _unwrapping(self._group.__aexit__(None, None, None))
        finally:
            self._outcomes.close()


async def _in_order(settings: _Settings) -> list[Outcome]:
    run = _Run(settings, None)
    await _unwrapping(run.run())
    results = run.results
    assert results is not None
    for index, outcome in run.leftovers():
        results[index] = outcome
    # Every item pulled has its outcome by now: each started call stored its
    # own (or left it in leftovers), and leftovers named every item not started.
    return cast("list[Outcome]", results)


async def _as_completed(settings: _Settings, send: MemoryObjectSendStream[Indexed]) -> None:
    async with send:
        run = _Run(settings, send)
        await run.run()
        for indexed in run.leftovers():
            await send.send(indexed)


@final
class _Run:
    """One fan-out in progress: pulls calls, starts them, collects their outcomes."""

    __slots__ = (
        "_freed",
        "_group",
        "_in_flight",
        "_late",
        "_native",
        "_next_start",
        "_pulled",
        "_pulling",
        "_send",
        "_settings",
        "_siblings",
        "_stopped",
        "_successes",
        "_tasks",
        "results",
    )

    def __init__(self, settings: _Settings, send: MemoryObjectSendStream[Indexed] | None) -> None:
        self._settings = settings
        self._send = send
        source = settings.source
        self.results: list[Outcome | None] | None = None
        if send is None:
            self.results = [None] * len(source) if isinstance(source, Sequence) else []
        self._in_flight = 0
        self._freed: anyio.Event | None = None
        self._group: TaskGroup | None = None
        self._native: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] | None = None
        self._pulling: anyio.CancelScope | None = None
        self._stopped: StopReason | None = None
        self._successes = 0
        self._pulled = 0
        # Outcomes that could not be stored or sent where they arose (their task
        # was being cancelled): handed over once the calls have all ended.
        self._late: list[Indexed] = []
        self._next_start = -math.inf
        self._siblings: Siblings | None = None
        if settings.hedge_stragglers:
            self._siblings = Siblings(len(source) if isinstance(source, Sequence) else None)

    async def run(self) -> None:
        settings = self._settings
        inherited = _ambient.get()
        deadline = inherited.deadline
        if settings.timeout is not None:
            deadline = nearest_deadline(
                deadline, Deadline._trusted(_clock.now() + settings.timeout)
            )
        deadline = nearest_deadline(deadline, settings.deadline)
        # Every call inherits the fan-out's deadline, as the ambient one.
        token = set_ambient(deadline, inherited.priority, inherited.origin)
        try:
            if _get_running_loop() is not None:
                # On asyncio, native tasks: a third of the cost of anyio's per call.
                async with asyncio.TaskGroup() as native:
                    self._native = native
                    self._tasks = set()
                    await self._pull_until(deadline)
            else:
                async with anyio.create_task_group() as group:
                    self._group = group
                    await self._pull_until(deadline)
        finally:
            reset_ambient(token)

    async def _pull_until(self, deadline: Deadline | None) -> None:
        # Only the pulling stops at the deadline: the calls in flight end on
        # their own, each with its client's deadline error (and history).
        with anyio.CancelScope(deadline=math.inf if deadline is None else deadline.at) as pulling:
            self._pulling = pulling
            if self._stopped is None:
                source = self._settings.source
                if isinstance(source, AsyncIterable):
                    await self._pull_async(aiter(source))
                else:
                    await self._pull(iter(source))

    def leftovers(self) -> list[Indexed]:
        """Outcomes not handed over yet: late ones, then the sequence's items never started."""
        left = self._late
        source = self._settings.source
        if isinstance(source, Sequence) and self._pulled < len(source):
            if self._stopped is not None:
                left.extend(
                    (index, _stopped_error(self._stopped, started=False))
                    for index in range(self._pulled, len(source))
                )
            else:
                left.extend(
                    (
                        index,
                        DeadlineExceededError(
                            "not started: the fan-out's deadline passed",
                            may_have_reached_server=False,
                        ),
                    )
                    for index in range(self._pulled, len(source))
                )
        return left

    # -- pulling and starting ---------------------------------------------------

    async def _slot(self) -> bool:
        """Wait for room under ``concurrency``, then for the ``rate`` spacing.

        Returns whether a call may start: a stop that came while this waited
        reaches the wait's scope only at its next checkpoint, so it is checked here.
        """
        settings = self._settings
        while self._in_flight >= settings.concurrency:
            self._freed = anyio.Event()
            await self._freed.wait()
        if settings.interval:
            # Starts at least ``1/rate`` seconds apart, never in a burst after a lull.
            now = anyio.current_time()
            if self._next_start > now:
                await anyio.sleep_until(self._next_start)
                now = self._next_start
            self._next_start = now + settings.interval
        return self._stopped is None

    async def _pull(self, items: Iterator[object]) -> None:
        settings = self._settings
        while True:
            # Only wait (a checkpoint) when there is something to wait for.
            if (self._in_flight >= settings.concurrency or settings.interval) and not (
                await self._slot()
            ):
                return
            try:
                item = next(items)
            except StopIteration:
                self._pulled_all()
                return
            self._start(item)

    async def _pull_async(self, items: AsyncIterator[object]) -> None:
        while await self._slot():
            try:
                item = await anext(items)
            except StopAsyncIteration:
                self._pulled_all()
                return
            self._start(item)

    def _pulled_all(self) -> None:
        if self._siblings is not None:
            self._siblings.expect(self._pulled)

    def _start(self, item: object) -> None:
        index = self._pulled
        self._pulled = index + 1
        if self.results is not None and self._send is None and index == len(self.results):
            self.results.append(None)
        if self._stopped is not None:
            # Pulled as the fan-out stopped (the stop came while the pull awaited).
            self._late.append((index, _stopped_error(self._stopped, started=False)))
            return
        self._in_flight += 1
        if self._native is not None:
            assert self._tasks is not None
            task = self._native.create_task(self._call(index, item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            assert self._group is not None
            self._group.start_soon(self._call, index, item)

    # -- one call ---------------------------------------------------------------

    async def _call(self, index: int, item: object) -> None:
        settings = self._settings
        try:
            client = settings.client
            if client is not None:
                request = item
            elif _is_call(item):
                client, request = cast("tuple[Client, Request]", item)
            else:
                request = None
            outcome: Outcome
            try:
                if client is None:
                    raise InvalidRequestError(
                        f"fan_out() calls must be (Client, Request) pairs; item {index} is {item!r}"
                    )
                outcome = await client._send(
                    cast("Request", request),
                    None,
                    None,
                    settings.priority,
                    settings.strategy,
                    settings.idempotent,
                    CLIENT_DEFAULT,
                    self._siblings,
                )
            except AioClientError as error:
                outcome = error
            except BaseException:
                if self._stopped is not None:
                    self._late.append((index, _stopped_error(self._stopped, started=True)))
                raise
            self._judge(outcome)
            if self._send is None:
                assert self.results is not None
                self.results[index] = outcome
            else:
                try:
                    await self._send.send((index, outcome))
                except BaseException:
                    self._late.append((index, outcome))
                    raise
        finally:
            self._in_flight -= 1
            if self._freed is not None:
                self._freed.set()
            if self._siblings is not None:
                self._siblings.ended()

    def _judge(self, outcome: Outcome) -> None:
        settings = self._settings
        if isinstance(outcome, Response) and outcome.is_success:
            self._successes += 1
            if settings.min_success is not None and self._successes >= settings.min_success:
                self._stop("min_success")
        elif settings.fail_fast:
            self._stop("fail_fast")

    def _stop(self, reason: StopReason) -> None:
        if self._stopped is None:
            self._stopped = reason
            if self._siblings is not None:
                self._siblings.stop()
            if self._pulling is not None:
                self._pulling.cancel()
            if self._tasks is not None:
                for task in self._tasks:
                    task.cancel()
            elif self._group is not None:
                self._group.cancel_scope.cancel()


def _rate(value: object) -> float:
    """``value`` as calls per second if it is a finite number greater than 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"rate must be a number of calls per second; got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"rate must be finite and > 0 calls per second; got {value!r}")
    return float(value)


def _is_call(item: object) -> bool:
    from ._client import Client

    return (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], Client)
        and isinstance(item[1], Request)
    )


def _stopped_error(reason: StopReason, *, started: bool) -> FanOutStoppedError:
    what = "cancelled" if started else "not started"
    if reason == "min_success":
        why = "the fan-out reached min_success"
    else:
        why = "another call of the fan-out failed (fail_fast)"
    return FanOutStoppedError(f"{what}: {why}", reason=reason, may_have_reached_server=started)


async def _unwrapping(work: Coroutine[object, None, _T]) -> _T:
    """Await ``work``; a task group's group of one error becomes that error."""
    try:
        return await work
    except BaseExceptionGroup as group:
        errors = _leaves(group)
        if len(errors) == 1:
            raise errors[0] from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            found.extend(_leaves(error))
        else:
            found.append(error)
    return found
