"""A circuit breaker's state, and what anyone told of a change needs of the breaker.

Shared by the breaker (``aio_client.policies``) and the metrics sinks it
notifies, so neither imports the other.
"""

from __future__ import annotations

import enum
from typing import Protocol

__all__ = ["CircuitState", "NamedBreaker"]


class CircuitState(enum.Enum):
    """Where a breaker is (values match aiocircuitbreaker's ``State``)."""

    #: Calls run; outcomes are counted.
    CLOSED = "closed"
    #: Calls are refused with :class:`~aio_client.CircuitOpenError`.
    OPEN = "open"
    #: A limited number of probe calls run; the rest are refused.
    HALF_OPEN = "half_open"


class NamedBreaker(Protocol):
    """What a state listener outside the policies reads of a breaker: its name.

    :class:`~aio_client.CircuitBreaker` is one; a per-endpoint breaker is
    named after its endpoint key.
    """

    @property
    def name(self) -> str: ...
