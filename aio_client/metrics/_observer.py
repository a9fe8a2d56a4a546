"""The observer interface: what metrics and tracing sinks plug into.

An observer is handed to ``Client(observers=[...])`` and, for the server
side, to the middleware's ``observer=``. It takes part in the pipeline in
two places, as stages (so it sees each call and each physical attempt live,
and may derive a request, e.g. to inject trace headers), and through a few
callbacks for things no stage can see (refused retries and hedges, breaker
state changes). With no observer configured none of this runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .._attempts import AttemptKind
    from .._circuit_state import CircuitState
    from .._models import Request
    from .._pipeline import Stage

    # Type-only, and the one exception to "metrics/ imports no policies/": an
    # observer written against this protocol may annotate the breaker as a
    # CircuitBreaker, so the protocol must promise exactly that. The sinks
    # themselves read only its name (NamedBreaker).
    from ..policies._breaker import CircuitBreaker

__all__ = ["Observer"]


@runtime_checkable
class Observer(Protocol):
    """A client-side metrics or tracing sink.

    - ``call_stage``: runs once per logical call, outermost (sees what the
      caller sees: one observation, total latency); ``None`` for none.
    - ``attempt_stage``: runs once per physical attempt, outermost of the
      attempt stages; :func:`aio_client.current_attempt` tells which attempt
      (number, kind, endpoint). A hedge that loses is cancelled inside it.
    - ``extra_attempt_refused``: a retry or hedge was not sent because the
      retry budget was empty.
    - ``breaker_state_changed``: registered on the client's circuit breaker.
    """

    @property
    def call_stage(self) -> Stage | None: ...

    @property
    def attempt_stage(self) -> Stage | None: ...

    def extra_attempt_refused(self, request: Request, kind: AttemptKind, /) -> None: ...

    def breaker_state_changed(
        self, breaker: CircuitBreaker, old: CircuitState, new: CircuitState, /
    ) -> None: ...
