"""The calls of one fan-out, as their hedging strategies see each other.

A fan-out lasts as long as its slowest call ("The Tail at Scale"). A hedging
strategy on its own waits for its delay (with :func:`adaptive_delays`, a
latency percentile of recent calls), measured on every call alike. Inside a
fan-out the calls know more: once all of them have started and at most a tenth
(at least one) are still running, the fan-out waits only for those, and one of
them whose newest attempt has run :data:`STRAGGLER_FACTOR` times longer than
the median time its siblings took to answer is a straggler. It is hedged at
once instead of at its strategy's delay.

Nothing else changes: a straggler's hedge is one of its strategy's attempts
(never more than ``attempts``), it draws from the client's retry budget like
any hedge, and a ``Retry-After`` still holds it back. A call whose strategy
does not hedge is only counted.

Runs on one event loop thread: the fan-out and the calls' strategies call in
from their tasks and timer callbacks, never concurrently.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final, final

from .strategies._adaptive import LatencyWindow

if TYPE_CHECKING:
    from .strategies._parallel import _Race

__all__ = ["STRAGGLER_FACTOR", "STRAGGLER_SHARE", "Siblings"]

#: A call still running is a straggler once its newest attempt has run this
#: many times the median time the fan-out's answered calls took.
STRAGGLER_FACTOR: Final = 2.0
#: Stragglers are looked for once every call has started and at most this
#: share of them (at least one) is still running.
STRAGGLER_SHARE: Final = 0.1


def _frozen_clock() -> float:
    # The median covers the whole fan-out: a window that never slides.
    return 0.0


@final
class Siblings:
    """One fan-out's calls: how many ended, how long the answered ones took,
    and the hedging races still running (see the module docstring)."""

    __slots__ = ("_durations", "_ended", "_notified", "_racing", "_stopped", "_total")

    def __init__(self, total: int | None) -> None:
        #: How many calls the fan-out has; ``None`` until its last one was pulled.
        self._total = total
        self._ended = 0
        # Log-bucketed, fixed memory however many calls answer.
        self._durations = LatencyWindow(1.0, _frozen_clock)
        self._racing: dict[_Race, None] = {}
        # The straggler delay the running races were last told (inf: none yet).
        self._notified = math.inf
        self._stopped = False

    # -- from the fan-out -------------------------------------------------------

    def expect(self, total: int) -> None:
        """The fan-out pulled its last call: it has ``total`` calls."""
        self._total = total
        self._look()

    def stop(self) -> None:
        """The fan-out stopped early: the calls left are being cancelled, not hedged."""
        self._stopped = True

    def ended(self) -> None:
        """One of the fan-out's calls ended, however it ended."""
        self._ended += 1
        self._look()

    # -- from the calls' hedging races --------------------------------------------

    def join(self, race: _Race) -> None:
        """A call's hedging race started."""
        self._racing[race] = None

    def leave(self, race: _Race, took: float | None) -> None:
        """A call's race ended; ``took``: seconds to its accepted answer, if any."""
        self._racing.pop(race, None)
        if took is not None:
            self._durations.record(took)

    def straggler_delay(self) -> float | None:
        """Seconds an attempt may run before its call counts as a straggler, or
        ``None`` while the fan-out is not down to its last calls."""
        total = self._total
        if total is None or self._stopped:
            return None
        if total - self._ended > max(1, int(total * STRAGGLER_SHARE)):
            return None
        median = self._durations.percentile(0.5)
        return None if median is None else STRAGGLER_FACTOR * median

    def _look(self) -> None:
        """Tell the running races when they become stragglers: once, when the
        fan-out gets down to its last calls, and again when that moves earlier."""
        delay = self.straggler_delay()
        if delay is None or delay >= self._notified:
            return
        self._notified = delay
        for race in self._racing:
            race.straggling(delay)
