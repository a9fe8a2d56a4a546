"""Hedged attempts: start another attempt when the first is slow, keep the first good answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import final

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .. import _clock
from .._attempts import AttemptKind
from .._call import Call, Outcome
from .._classifier import Verdict
from .._deadline import validate_timeout
from .._errors import AioClientError, ConfigError, DeadlineExceededError
from .._models import Response
from ._adaptive import AdaptiveDelays, DelayKey
from ._delays import Delays

__all__ = ["HedgeDelays", "ParallelStrategy", "parallel_strategy"]

#: A fixed delay (seconds), one per hedge, a function of the hedge number, or adaptive.
HedgeDelays = float | Sequence[float] | Delays | AdaptiveDelays


@final
class ParallelStrategy:
    """Hedged attempts; see :func:`parallel_strategy`."""

    __slots__ = ("_adaptive", "_attempts", "_delays")

    def __init__(self, attempts: int, delays: HedgeDelays) -> None:
        if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 10:
            raise ConfigError(f"attempts must be an int from 1 to 10; got {attempts!r}")
        self._attempts = attempts
        self._adaptive = delays if isinstance(delays, AdaptiveDelays) else None
        self._delays = _fixed_delays(delays) if self._adaptive is None else None

    async def execute(self, call: Call, /) -> Response:
        """Run attempts, hedging after the delay or at once after a retryable failure."""
        limit = self._attempts if call.retries_allowed else 1
        key: DelayKey | None = None
        if self._adaptive is not None:
            key = (call.endpoint_for(1), call.request.method, call.request.route)
        send, receive = anyio.create_memory_object_stream[tuple[int, str, float, Outcome]](
            self._attempts + 1
        )
        in_flight: dict[int, tuple[str, float]] = {}  # number -> (endpoint, start time)
        final: Outcome | None = None
        last: Outcome | None = None
        started = 0
        # False once a hedge was refused (budget, deadline): no further tries.
        may_launch = True
        try:
            async with send, receive, anyio.create_task_group() as tg:
                started = 1
                self._launch(tg, call, send, 1, AttemptKind.FIRST, call.endpoint_for(1), in_flight)
                while True:
                    hedge_due = may_launch and started < limit
                    message = await self._next_outcome(receive, in_flight, started, hedge_due, key)
                    if message is None:
                        # The hedge delay passed with no answer.
                        if self._may_send(call, AttemptKind.HEDGE):
                            started += 1
                            endpoint = _pick(call, in_flight)
                            self._launch(
                                tg, call, send, started, AttemptKind.HEDGE, endpoint, in_flight
                            )
                        else:
                            may_launch = False
                        continue
                    number, endpoint, duration, outcome = message
                    del in_flight[number]
                    verdict = call.classify(outcome)
                    if verdict is not Verdict.RETRY:
                        final = outcome
                        if verdict is Verdict.ACCEPT and key is not None:
                            self._record(key, endpoint, duration, number, in_flight)
                        break
                    last = outcome
                    if started == 1 and limit == 1 and _provably_unsent(outcome):
                        limit = 2  # never sent: safe to send once more, even a POST
                    if may_launch and started < limit:
                        # A retryable failure starts the next attempt at once.
                        if self._may_send(call, AttemptKind.RETRY):
                            started += 1
                            endpoint = _pick(call, in_flight)
                            self._launch(
                                tg, call, send, started, AttemptKind.RETRY, endpoint, in_flight
                            )
                            continue
                        may_launch = False
                    if not in_flight:
                        break
                # Losers are cancelled here and awaited as the task group exits.
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # Attempts never raise (Call.attempt returns outcomes), so a group holds
            # a bug; never hand callers a one-member group.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        result = final if final is not None else last
        assert result is not None
        return call.result(result)

    async def _next_outcome(
        self,
        receive: MemoryObjectReceiveStream[tuple[int, str, float, Outcome]],
        in_flight: dict[int, tuple[str, float]],
        started: int,
        hedge_due: bool,
        key: DelayKey | None,
    ) -> tuple[int, str, float, Outcome] | None:
        """The next attempt's outcome, or ``None`` when it is time to hedge."""
        if not hedge_due:
            return await receive.receive()
        latest = in_flight.get(started)
        since = _clock.now() - latest[1] if latest is not None else 0.0
        wait = self._delay(started, key) - since
        if wait <= 0.0:
            try:
                return receive.receive_nowait()
            except anyio.WouldBlock:
                return None
        with anyio.move_on_after(wait):
            return await receive.receive()
        return None

    @staticmethod
    def _may_send(call: Call, kind: AttemptKind) -> bool:
        """Whether one more attempt may go out: time left, and a budget token."""
        return call.remaining() >= call.low_timeout and call.try_extra_attempt(kind)

    def _delay(self, started: int, key: DelayKey | None) -> float:
        if self._adaptive is not None and key is not None:
            return self._adaptive.delay(key)
        assert self._delays is not None
        return self._delays(started)

    def _record(
        self,
        key: DelayKey,
        endpoint: str,
        duration: float,
        number: int,
        in_flight: dict[int, tuple[str, float]],
    ) -> None:
        assert self._adaptive is not None
        adaptive = self._adaptive
        adaptive.record((endpoint, key[1], key[2]), duration)
        first = in_flight.get(1)
        if first is not None and number != 1:
            # The first attempt lost while still running: it took at least this
            # long. Counting it keeps the slow tail in the percentile, which
            # would otherwise drift down as hedging hides slow answers.
            adaptive.record((first[0], key[1], key[2]), _clock.now() - first[1])

    @staticmethod
    def _launch(
        tg: TaskGroup,
        call: Call,
        send: MemoryObjectSendStream[tuple[int, str, float, Outcome]],
        number: int,
        kind: AttemptKind,
        endpoint: str,
        in_flight: dict[int, tuple[str, float]],
    ) -> None:
        start = _clock.now()
        in_flight[number] = (endpoint, start)
        tg.start_soon(_run_attempt, call, send, number, kind, endpoint, start)

    def __repr__(self) -> str:
        delays = self._adaptive if self._adaptive is not None else self._delays
        return f"parallel_strategy(attempts={self._attempts}, delays={delays!r})"


async def _run_attempt(
    call: Call,
    send: MemoryObjectSendStream[tuple[int, str, float, Outcome]],
    number: int,
    kind: AttemptKind,
    endpoint: str,
    start: float,
) -> None:
    outcome = await call.attempt(number, kind, endpoint=endpoint)
    # The stream has room for every attempt, so this never waits.
    send.send_nowait((number, endpoint, _clock.now() - start, outcome))


def _pick(call: Call, in_flight: dict[int, tuple[str, float]]) -> str:
    """The next endpoint in rotation that no in-flight attempt is using."""
    busy = {endpoint for endpoint, _ in in_flight.values()}
    candidates = call.endpoints
    for endpoint in candidates:
        if endpoint not in busy:
            return endpoint
    return candidates[len(in_flight) % len(candidates)]


def _provably_unsent(outcome: Outcome) -> bool:
    return (
        isinstance(outcome, AioClientError)
        and not outcome.may_have_reached_server
        and not isinstance(outcome, DeadlineExceededError)
    )


class _Sequence:
    __slots__ = ("_values",)

    def __init__(self, values: Sequence[float]) -> None:
        if not values:
            raise ConfigError("delays must not be an empty sequence")
        self._values = tuple(validate_timeout(v, "delays[]") for v in values)

    def __call__(self, n: int) -> float:
        return self._values[min(n, len(self._values)) - 1]

    def __repr__(self) -> str:
        return repr(list(self._values))


class _Constant:
    __slots__ = ("_value",)

    def __init__(self, value: float) -> None:
        self._value = validate_timeout(value, "delays")

    def __call__(self, n: int) -> float:
        return self._value

    def __repr__(self) -> str:
        return repr(self._value)


def _fixed_delays(delays: HedgeDelays) -> Delays:
    if isinstance(delays, (int, float)) and not isinstance(delays, bool):
        return _Constant(delays)
    if isinstance(delays, Sequence) and not isinstance(delays, str):
        return _Sequence(delays)
    if callable(delays):
        return delays
    raise ConfigError(
        "delays must be seconds, a sequence of seconds, a function of the hedge number, "
        f"or adaptive_delays(...); got {delays!r}"
    )


def parallel_strategy(attempts: int = 3, delays: HedgeDelays = 0.05) -> ParallelStrategy:
    """Hedged requests: up to ``attempts`` concurrent attempts; the first good answer wins.

    Attempt 1 starts at once; attempt ``k + 1`` starts when ``delays`` has
    passed since attempt ``k`` started, or at once when an attempt fails with a
    retryable outcome. Losers are cancelled and awaited; their connections are
    closed. Every hedge draws from the client's retry budget (none is sent when
    it is empty) and only idempotent requests are hedged unless the call opts
    in. With several endpoints, a hedge goes to one no in-flight attempt uses.

    ``delays``: seconds (``0.05``), one per hedge (``[0.02, 0.05]``), a
    function of the hedge number (``linear_delays(...)``), or
    :func:`adaptive_delays` to follow the observed latency percentile.
    """
    return ParallelStrategy(attempts, delays)
