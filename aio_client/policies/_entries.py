"""Per-task state of ``async with policy:`` blocks.

A policy object is shared by many tasks, so what one ``async with`` needs at
exit (a breaker's admission ticket, a timeout's cancel scope) cannot live on
the policy. It lives on a stack in a context variable instead: every task has
its own, and nested blocks of the same policy pop in the order they pushed.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import final

__all__ = ["pop_entry", "push_entry"]


@final
class _Entry:
    __slots__ = ("owner", "token", "value")

    def __init__(self, owner: object, value: object) -> None:
        self.owner = owner
        self.value = value
        self.token: Token[_Entry | None] | None = None


_top: ContextVar[_Entry | None] = ContextVar("aio_client_policy_entries", default=None)


def push_entry(owner: object, value: object) -> None:
    """Remember ``value`` for ``owner``'s ``__aexit__`` in this task."""
    entry = _Entry(owner, value)
    entry.token = _top.set(entry)


def pop_entry(owner: object) -> object:
    """Take back what ``owner``'s ``__aenter__`` remembered in this task."""
    entry = _top.get()
    if entry is None or entry.owner is not owner or entry.token is None:
        raise RuntimeError(f"async with {owner!r} exited in another task or out of order")
    _top.reset(entry.token)
    return entry.value
