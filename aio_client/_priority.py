"""Request priority and its header codec."""

from __future__ import annotations

import enum
from typing import Final

from ._errors import ConfigError

__all__ = ["PRIORITY_HEADER", "Priority", "parse_priority_header"]

#: Header that carries the priority between services.
PRIORITY_HEADER: Final = "x-request-priority"


class Priority(enum.StrEnum):
    """How important a call is; servers shed ``LOW`` first under overload."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @classmethod
    def coerce(cls, value: Priority | str, *, name: str = "priority") -> Priority:
        """Return ``value`` as a :class:`Priority`, or raise :class:`ConfigError`."""
        if isinstance(value, Priority):
            return value
        try:
            return cls(value.lower() if isinstance(value, str) else value)
        except (ValueError, AttributeError):
            raise ConfigError(
                f"{name} must be one of 'high', 'normal', 'low'; got {value!r}"
            ) from None


_BY_HEADER: Final = {p.value: p for p in Priority}


def parse_priority_header(value: str | None) -> Priority | None:
    """Decode an ``X-Request-Priority`` value; unknown values read as absent."""
    if value is None:
        return None
    return _BY_HEADER.get(value.strip().lower())
