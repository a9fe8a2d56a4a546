"""How much of the call's remaining budget one attempt may use."""

from __future__ import annotations

from typing import Protocol

__all__ = ["AttemptTimeout", "pass_deadline_through", "split_deadline_between_attempts"]


class AttemptTimeout(Protocol):
    """Given the call's remaining seconds and attempts left (this one included),
    return the seconds this attempt may take."""

    def __call__(self, remaining: float, attempts_left: int, /) -> float: ...


def pass_deadline_through(remaining: float, attempts_left: int, /) -> float:
    """Every attempt may use all of the call's remaining budget (the default)."""
    return remaining


def split_deadline_between_attempts(remaining: float, attempts_left: int, /) -> float:
    """Each attempt gets an equal share of what is left, so a hung first
    attempt still leaves time for the others."""
    return remaining / max(attempts_left, 1)
