"""Deadlines, the ambient call scope, and the deadline header codecs.

``timeout`` always means a relative duration in seconds; ``deadline`` an
absolute time on the event loop's monotonic clock (see ``_clock``). Only
relative budgets travel on the wire, because clocks differ between hosts.
"""

from __future__ import annotations

import math
import re
from contextlib import AbstractContextManager
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Final, final

from . import _clock
from ._errors import ConfigError
from ._priority import Priority
from ._validation import validate_timeout

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "ENVOY_TIMEOUT_HEADER",
    "GRPC_TIMEOUT_HEADER",
    "MAX_WIRE_TIMEOUT",
    "TIMEOUT_HEADER",
    "Deadline",
    "ambient",
    "current_deadline",
    "current_priority",
    "format_timeout_header",
    "parse_envoy_timeout",
    "parse_grpc_timeout",
    "parse_timeout_header",
]

#: Header carrying the sender's remaining budget in decimal seconds (aio-request's name).
TIMEOUT_HEADER: Final = "x-request-timeout"
#: gRPC's timeout header: an integer of at most 8 digits and a unit letter.
GRPC_TIMEOUT_HEADER: Final = "grpc-timeout"
#: Envoy's expected request timeout, integer milliseconds.
ENVOY_TIMEOUT_HEADER: Final = "x-envoy-expected-rq-timeout-ms"
#: Longest budget believed from a header (one day); anything longer is absurd.
MAX_WIRE_TIMEOUT: Final = 86_400.0


@final
class Deadline:
    """An absolute point on the event loop's monotonic clock.

    Build one with :meth:`from_timeout`; compare deadlines with ``<`` and take
    the nearest with ``min()``.
    """

    __slots__ = ("at",)

    at: float

    def __init__(self, at: float) -> None:
        if not isinstance(at, (int, float)) or math.isnan(at):
            raise ConfigError(f"deadline must be a monotonic time in seconds; got {at!r}")
        object.__setattr__(self, "at", float(at))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Deadline is immutable")

    @classmethod
    def _trusted(cls, at: float) -> Deadline:
        """A deadline at ``at``, already known to be a float (hot path)."""
        deadline = object.__new__(cls)
        _set_at(deadline, at)
        return deadline

    @classmethod
    def from_timeout(cls, timeout: float) -> Deadline:
        """The deadline ``timeout`` seconds from now."""
        return cls(_clock.now() + validate_timeout(timeout))

    def remaining(self) -> float:
        """Seconds left before the deadline; ``0.0`` once it has passed."""
        left = self.at - _clock.now()
        return left if left > 0.0 else 0.0

    @property
    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return _clock.now() >= self.at

    def __lt__(self, other: Deadline) -> bool:
        return self.at < other.at

    def __le__(self, other: Deadline) -> bool:
        return self.at <= other.at

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Deadline) and other.at == self.at

    def __hash__(self) -> int:
        return hash(self.at)

    def __repr__(self) -> str:
        return f"Deadline(at={self.at!r}, remaining={self.remaining():.3f})"


_set_at = Deadline.__dict__["at"].__set__


@final
class _Ambient:
    # origin: the served request these values came from (the server core's
    # Admission), carried into every nested block so its handler's code finds it.
    __slots__ = ("deadline", "origin", "priority")

    def __init__(
        self, deadline: Deadline | None, priority: Priority | None, origin: object = None
    ) -> None:
        self.deadline = deadline
        self.priority = priority
        self.origin = origin


_EMPTY: Final = _Ambient(None, None)
# set_ambient's default: keep the origin of the values being replaced.
_CARRY: Final = object()
_ambient: ContextVar[_Ambient] = ContextVar("aio_client_ambient", default=_EMPTY)


def current_deadline() -> Deadline | None:
    """The deadline every call made here inherits, or ``None``."""
    return _ambient.get().deadline


def current_priority() -> Priority | None:
    """The priority every call made here inherits, or ``None``."""
    return _ambient.get().priority


def ambient(
    *,
    timeout: float | None = None,
    deadline: Deadline | None = None,
    priority: Priority | str | None = None,
) -> AbstractContextManager[Deadline | None]:
    """Set the deadline and priority that calls inside the block inherit.

    The deadline is the nearest of ``timeout``/``deadline`` and any inherited
    one: a block can shorten its caller's budget, never extend it. Tasks
    started inside the block inherit it too. This sets what outgoing calls
    see; it does not cancel the block's own work (a cancel scope does that).
    """
    return _AmbientBlock(timeout, deadline, priority)


@final
class _AmbientBlock:
    """What :func:`ambient` returns: sets the values on entry, restores them on exit."""

    __slots__ = ("_new", "_token")

    def __init__(
        self,
        timeout: float | None,
        deadline: Deadline | None,
        priority: Priority | str | None,
    ) -> None:
        current = _ambient.get()
        nearest = current.deadline
        if timeout is not None:
            nearest = nearest_deadline(nearest, Deadline.from_timeout(timeout))
        if deadline is not None:
            if not isinstance(deadline, Deadline):
                raise ConfigError(f"deadline must be a Deadline; got {deadline!r}")
            nearest = nearest_deadline(nearest, deadline)
        prio = current.priority if priority is None else Priority.coerce(priority)
        self._new = _Ambient(nearest, prio, current.origin)
        self._token: Token[_Ambient] | None = None

    def __enter__(self) -> Deadline | None:
        if self._token is not None:
            raise RuntimeError("ambient() is not reentrant; make a new one")
        self._token = _ambient.set(self._new)
        return self._new.deadline

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._token is not None
        _ambient.reset(self._token)


def set_ambient(
    deadline: Deadline | None, priority: Priority | None, origin: object = _CARRY
) -> Token[_Ambient]:
    """Low-level: set both values; the caller must ``reset_ambient`` the token.

    ``origin`` (the served request the values belong to) is kept from the values
    being replaced unless given (callers that hold those values pass it on).
    """
    if origin is _CARRY:
        origin = _ambient.get().origin
    return _ambient.set(_Ambient(deadline, priority, origin))


def reset_ambient(token: Token[_Ambient]) -> None:
    """Undo :func:`set_ambient`."""
    _ambient.reset(token)


def nearest_deadline(a: Deadline | None, b: Deadline | None) -> Deadline | None:
    """The nearer of two deadlines, either of which may be ``None`` (none)."""
    if b is None:
        return a
    return b if a is None or b.at < a.at else a


# --- wire codecs -----------------------------------------------------------

# aio-request writes str(float): up to 17 significant digits, and "5e-05" below 1e-4.
_DECIMAL: Final = re.compile(
    r"\s*((?:\d{1,12}(?:\.\d{0,20})?|\.\d{1,20})(?:[eE]-\d{1,3})?)\s*", re.ASCII
)
_GRPC: Final = re.compile(r"\s*(\d{1,8})([HMSmun])\s*", re.ASCII)
_GRPC_UNITS: Final = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_MILLIS: Final = re.compile(r"\s*(\d{1,12})\s*", re.ASCII)


def format_timeout_header(timeout: float) -> str:
    """Encode a remaining budget as ``X-Request-Timeout``: decimal seconds, truncated to ms.

    Truncated, not rounded: rounding up would hand the callee more than the caller has.
    """
    return f"{math.floor(timeout * 1000.0) / 1000.0:.3f}" if timeout > 0.0 else "0.000"


def parse_timeout_header(value: str | None) -> float | None:
    """Decode ``X-Request-Timeout``; malformed, negative or absurd values give ``None``."""
    if value is None:
        return None
    # Every request carries one, nearly always plain "12.345" (what
    # format_timeout_header writes): read that without the regular expression.
    whole, _, fraction = value.partition(".")
    if (
        value.isascii()
        and whole.isdigit()
        and len(whole) <= 12
        and len(fraction) <= 20
        and (not fraction or fraction.isdigit())
    ):
        seconds = float(value)
    else:
        seconds = _parse_decimal(value)
    return seconds if 0.0 <= seconds <= MAX_WIRE_TIMEOUT else None


def _parse_decimal(value: str) -> float:
    """``X-Request-Timeout``'s whole grammar (``NaN`` when it does not match)."""
    match = _DECIMAL.fullmatch(value)
    return math.nan if match is None else float(match.group(1))


def parse_grpc_timeout(value: str | None) -> float | None:
    """Decode gRPC's ``grpc-timeout`` (for example ``250m``) to seconds."""
    if value is None:
        return None
    match = _GRPC.fullmatch(value)
    if match is None:
        return None
    return _believable(int(match.group(1)) * _GRPC_UNITS[match.group(2)])


def parse_envoy_timeout(value: str | None) -> float | None:
    """Decode Envoy's ``x-envoy-expected-rq-timeout-ms`` to seconds."""
    if value is None:
        return None
    match = _MILLIS.fullmatch(value)
    if match is None:
        return None
    return _believable(int(match.group(1)) / 1000.0)


def _believable(seconds: float) -> float | None:
    return seconds if 0.0 <= seconds <= MAX_WIRE_TIMEOUT else None
