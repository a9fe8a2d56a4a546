"""A call whose timers all come due while the event loop is stalled ends with its deadline.

The endpoint's connect hangs (a full accept queue on 127.0.0.1), so no attempt
ever answers. A blocking callback stalls the loop across the hedge timer and the
call's deadline: when the loop runs again both are due in the same iteration.
The call must raise ``DeadlineExceededError`` at once — not an AssertionError,
not a bare CancelledError, not an ExceptionGroup, and not keep running — and
leave no task behind. Sequential and single attempts are the controls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, final

import anyio
import pytest

import aio_client as ac
from aio_client.transports import AiohttpTransport, HttpxTransport, Transport
from tests.integration.servers import hanging_connect_url, settle

#: The call's budget and the parallel strategy's hedge delay (seconds).
TIMEOUT: Final = 0.2
HEDGE_DELAY: Final = 0.05
#: Generous for a noisy machine, yet far below a call that keeps running.
PROMPT: Final = 1.0
#: A call still running this long after it started is hung.
HUNG: Final = 3.0


@final
@dataclass(frozen=True, slots=True)
class Stall:
    """The loop is blocked from ``at`` to ``at + seconds`` after the call starts."""

    name: str
    at: float
    seconds: float


STALLS: Final = [
    # From before the hedge timer to after the deadline: both fire in one iteration.
    Stall("across-hedge-and-deadline", at=0.02, seconds=0.25),
    # Later, and ending further past the deadline.
    Stall("from-0.04-to-0.30", at=0.04, seconds=0.26),
    # Starting in the hedge timer's own iteration: whichever of the two callbacks
    # runs first, the deadline then finds one or two attempts connecting.
    Stall("starting-at-the-hedge", at=HEDGE_DELAY, seconds=0.2),
]

STRATEGIES: Final[dict[str, Callable[[], ac.Strategy]]] = {
    "parallel": lambda: ac.parallel_strategy(attempts=2, delays=HEDGE_DELAY),
    "sequential": ac.sequential_strategy,
    "single": ac.single_attempt_strategy,
}

TRANSPORTS: Final[dict[str, Callable[[], Transport]]] = {
    "AiohttpTransport": AiohttpTransport,
    "HttpxTransport": HttpxTransport,
}


@pytest.mark.parametrize("stall", STALLS, ids=lambda stall: stall.name)
@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("transport", list(TRANSPORTS))
async def test_deadline_due_during_a_loop_stall_raises_deadline_exceeded_promptly(
    transport: str, strategy: str, stall: Stall
) -> None:
    """DeadlineExceededError soon after the stall, nothing else escapes, no task is left."""
    tasks_before = set(asyncio.all_tasks())
    stalled: list[float] = []

    def block_the_loop() -> None:
        stalled.append(anyio.current_time())
        time.sleep(stall.seconds)  # the stall itself: the loop runs nothing meanwhile

    outcome: BaseException | None = None
    with hanging_connect_url() as url:
        client = ac.Client(TRANSPORTS[transport](), url, strategy=STRATEGIES[strategy]())
        async with client:
            loop = asyncio.get_running_loop()
            started = anyio.current_time()
            handle = loop.call_later(stall.at, block_the_loop)
            try:
                with anyio.fail_after(HUNG):
                    await client.get("/x", timeout=TIMEOUT)
            except BaseException as exc:  # the outcome itself is under test
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                outcome = exc
            finally:
                handle.cancel()
            elapsed = anyio.current_time() - started

    assert stalled, f"the call ended ({outcome!r}) before the loop was stalled"
    assert isinstance(outcome, ac.DeadlineExceededError), (
        f"expected DeadlineExceededError, got {outcome!r} after {elapsed:.3f} s"
    )
    assert elapsed < PROMPT, f"the call ended {elapsed:.3f} s after it started"
    finished = await settle(lambda: not set(asyncio.all_tasks()) - tasks_before, within=1.0)
    assert finished, f"tasks left: {set(asyncio.all_tasks()) - tasks_before}"
