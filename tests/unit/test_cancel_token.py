"""CancelToken: reasons, scopes, deadlines, callbacks, children, shielding (virtual time)."""

from __future__ import annotations

import gc
import logging
import math
import threading

import anyio
import pytest

import aio_client as ac
from aio_client._cancel import CancelReason, CancelToken, current_token


async def test_first_reason_wins_and_cancel_reports_it() -> None:
    """cancel() fires once: the first reason and message stick, later calls return False."""
    token = CancelToken()
    assert not token.cancelled
    assert token.reason is None
    assert token.cancel(CancelReason.EXPLICIT, "stop")
    assert not token.cancel(CancelReason.SHUTDOWN)
    assert token.cancelled
    assert token.reason is CancelReason.EXPLICIT
    assert token.message == "stop"


def test_cancel_rejects_a_non_reason() -> None:
    """A reason that is not a CancelReason is a ConfigError naming the parameter."""
    with pytest.raises(ac.ConfigError, match="reason"):
        CancelToken().cancel("deadline")  # type: ignore[arg-type]


async def test_scope_cancels_running_work_and_absorbs_only_its_own_cancellation() -> None:
    """Work in token.scope() sees a normal cancellation when the token fires; the scope ends it."""
    token = CancelToken()
    seen: list[str] = []

    async def work() -> None:
        with token.scope() as scope:
            try:
                await anyio.sleep(100)
            except anyio.get_cancelled_exc_class():
                seen.append("cancelled")
                raise
        seen.append(f"after scope caught={scope.cancelled_caught}")

    async with anyio.create_task_group() as tg:
        tg.start_soon(work)
        await anyio.sleep(1)
        token.cancel(CancelReason.EXPLICIT)
    assert seen == ["cancelled", "after scope caught=True"]


async def test_outside_cancellation_passes_through_the_scope() -> None:
    """A cancellation that the token did not cause is not swallowed by token.scope()."""
    token = CancelToken()
    reached_after = False
    with anyio.CancelScope() as outer:
        with token.scope():
            outer.cancel()
            await anyio.sleep(1)
        reached_after = True  # pragma: no cover - must not run
    assert outer.cancelled_caught
    assert not reached_after
    assert not token.cancelled


async def test_deadline_fires_reason_and_callbacks_at_the_deadline() -> None:
    """A token's deadline cancels its scope at that time, with reason DEADLINE already set."""
    token = CancelToken(timeout=2.0)
    start = anyio.current_time()
    fired_at: list[float] = []
    reason_in_handler: list[CancelReason | None] = []
    with token.on_cancel(lambda: fired_at.append(anyio.current_time())), token.scope():
        try:
            await anyio.sleep(100)
        finally:
            reason_in_handler.append(token.reason)
    assert token.reason is CancelReason.DEADLINE
    assert reason_in_handler == [CancelReason.DEADLINE]
    assert fired_at == [pytest.approx(start + 2.0)]


async def test_deadline_seen_without_a_scope() -> None:
    """A passed deadline reads as cancelled (DEADLINE) even when no scope is open."""
    token = CancelToken(timeout=1.0)
    assert token.remaining() == pytest.approx(1.0)
    await anyio.sleep(1.5)
    assert token.cancelled
    assert token.reason is CancelReason.DEADLINE
    assert token.remaining() == 0.0


async def test_remaining_is_infinite_without_deadline_and_zero_when_cancelled() -> None:
    """remaining(): inf with no deadline, counting down with one, 0 once fired."""
    token = CancelToken()
    assert token.remaining() == math.inf
    token.cancel(CancelReason.EXPLICIT)
    assert token.remaining() == 0.0


async def test_callbacks_run_in_order_once_and_errors_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Callbacks run once in registration order; one raising is logged, the rest still run."""
    token = CancelToken()
    calls: list[str] = []

    def broken() -> None:
        calls.append("broken")
        raise RuntimeError("boom")

    token.on_cancel(lambda: calls.append("first"))
    token.on_cancel(broken)
    token.on_cancel(lambda: calls.append("third"))
    with caplog.at_level(logging.ERROR, logger="aio_client"):
        token.cancel(CancelReason.EXPLICIT)
        token.cancel(CancelReason.EXPLICIT)
    assert calls == ["first", "broken", "third"]
    assert "cancel callback raised" in caplog.text


async def test_on_cancel_after_firing_runs_at_once() -> None:
    """Registering on a fired token runs the callback immediately."""
    token = CancelToken()
    token.cancel(CancelReason.SHUTDOWN)
    calls: list[int] = []
    with token.on_cancel(lambda: calls.append(1)):
        assert calls == [1]


async def test_registrations_are_removed_when_their_scope_ends() -> None:
    """A long-lived token does not grow: each with-block's callback is gone when it ends."""
    token = CancelToken()
    calls: list[int] = []
    for i in range(1000):
        with token.on_cancel(lambda i=i: calls.append(i)):  # type: ignore[misc]
            pass
    registration = token.on_cancel(lambda: calls.append(-1))
    registration.remove()
    registration.remove()
    assert not token._callbacks
    token.cancel(CancelReason.EXPLICIT)
    assert calls == []


async def test_parent_cancellation_cancels_children_not_the_reverse() -> None:
    """Cancelling a parent cancels its children with the same reason; a child leaves its parent."""
    parent = CancelToken()
    first, second = parent.child(), parent.child()
    grandchild = first.child()
    second.cancel(CancelReason.HEDGE_LOST)
    assert not parent.cancelled
    parent.cancel(CancelReason.CLIENT_DISCONNECTED, "gone")
    assert first.reason is CancelReason.CLIENT_DISCONNECTED
    assert grandchild.reason is CancelReason.CLIENT_DISCONNECTED
    assert grandchild.message == "gone"
    assert second.reason is CancelReason.HEDGE_LOST
    assert parent.child().reason is CancelReason.CLIENT_DISCONNECTED


async def test_children_do_not_accumulate_on_a_long_lived_parent() -> None:
    """Children that fired or were dropped leave the parent's child set."""
    parent = CancelToken()
    for _ in range(100):
        parent.child().cancel(CancelReason.HEDGE_LOST)
    for _ in range(100):
        parent.child()
    gc.collect()
    assert not parent._children


async def test_child_deadline_is_the_nearest_whatever_the_order() -> None:
    """A child never outlives its parent's deadline; tightening keeps the nearest deadline."""
    parent = CancelToken(timeout=5.0)
    longer = parent.child(timeout=60.0)
    shorter = parent.child(timeout=1.0)
    assert longer.deadline == parent.deadline
    assert shorter.remaining() == pytest.approx(1.0)
    near = ac.Deadline.from_timeout(2.0)
    far = ac.Deadline.from_timeout(4.0)
    parent.tighten(near)
    parent.tighten(far)
    assert parent.deadline == near
    assert longer.deadline == near
    assert shorter.remaining() == pytest.approx(1.0)


async def test_tighten_moves_a_running_scope_deadline() -> None:
    """Tightening a token while its scope runs ends the work at the new, nearer deadline."""
    token = CancelToken(timeout=10.0)
    start = anyio.current_time()

    async def tighten_later() -> None:
        await anyio.sleep(1.0)
        token.tighten(ac.Deadline.from_timeout(1.0))

    async with anyio.create_task_group() as tg:
        tg.start_soon(tighten_later)
        with token.scope():
            await anyio.sleep(100)
    assert anyio.current_time() == pytest.approx(start + 2.0)
    assert token.reason is CancelReason.DEADLINE


async def test_parent_deadline_stops_work_under_a_child_token() -> None:
    """Work under a child's scope stops when the parent's deadline passes."""
    parent = CancelToken(timeout=1.0)
    child = parent.child()
    start = anyio.current_time()
    with parent.scope(), child.scope():
        await anyio.sleep(100)
    assert anyio.current_time() == pytest.approx(start + 1.0)
    assert child.reason is CancelReason.DEADLINE


async def test_wait_returns_the_reason() -> None:
    """await wait() returns when another task cancels the token, with its reason."""
    token = CancelToken()

    async def cancel_later() -> None:
        await anyio.sleep(3)
        token.cancel(CancelReason.SHUTDOWN)

    async with anyio.create_task_group() as tg:
        tg.start_soon(cancel_later)
        assert await token.wait() is CancelReason.SHUTDOWN
    assert await token.wait() is CancelReason.SHUTDOWN


async def test_wait_returns_at_the_deadline() -> None:
    """await wait() returns DEADLINE when the deadline passes."""
    token = CancelToken(timeout=4.0)
    start = anyio.current_time()
    assert await token.wait() is CancelReason.DEADLINE
    assert anyio.current_time() == pytest.approx(start + 4.0)


async def test_scope_on_a_fired_token_stops_at_the_first_checkpoint() -> None:
    """Entering a fired token's scope cancels the block at once (level-triggered)."""
    token = CancelToken()
    token.cancel(CancelReason.EXPLICIT)
    with token.scope() as scope:
        await anyio.sleep(100)
    assert scope.cancelled_caught


async def test_current_token_is_set_inside_scopes_and_inherited_by_tasks() -> None:
    """current_token() is the innermost scope's token, and tasks started there see it."""
    token = CancelToken()
    inner = token.child()
    seen: list[CancelToken | None] = []
    assert current_token() is None
    with token.scope():
        seen.append(current_token())
        with inner.scope():
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: _append(seen))
        seen.append(current_token())
    assert seen == [token, inner, token]
    assert current_token() is None


async def _append(seen: list[CancelToken | None]) -> None:
    seen.append(current_token())


async def test_shield_lets_cleanup_finish_under_a_fired_token() -> None:
    """Cleanup in token.shield() completes although the token has fired."""
    token = CancelToken(timeout=1.0)
    cleaned_at: list[float] = []
    start = anyio.current_time()
    with token.scope():
        try:
            await anyio.sleep(100)
        finally:
            with token.shield(timeout=5.0):
                await anyio.sleep(2.0)
                cleaned_at.append(anyio.current_time())
    assert cleaned_at == [pytest.approx(start + 3.0)]


async def test_shield_timeout_bounds_cleanup_and_sets_its_own_budget() -> None:
    """Inside shield(timeout) calls inherit the shield's deadline; the cleanup stops at it."""
    token = CancelToken()
    budgets: list[float] = []
    start = anyio.current_time()
    with ac.ambient(timeout=0.5), token.shield(timeout=3.0):
        deadline = ac.current_deadline()
        assert deadline is not None
        budgets.append(deadline.remaining())
        await anyio.sleep(100)
    assert budgets == [pytest.approx(3.0)]
    assert anyio.current_time() == pytest.approx(start + 3.0)


async def test_cancel_threadsafe_from_another_thread() -> None:
    """cancel_threadsafe() from a worker thread cancels work running on the loop."""
    token = CancelToken()
    threads: list[int] = []

    def from_thread() -> None:
        threads.append(threading.get_ident())
        token.cancel_threadsafe(CancelReason.SHUTDOWN, "SIGTERM")

    with token.scope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, from_thread)
            await anyio.sleep(100)
    assert scope.cancelled_caught
    assert threads[0] != threading.get_ident()
    assert token.reason is CancelReason.SHUTDOWN


async def test_finished_token_never_fires_afterwards() -> None:
    """A token whose work completed is not cancelled by its deadline or later calls."""
    token = CancelToken(timeout=1.0)
    calls: list[int] = []
    token.on_cancel(lambda: calls.append(1))
    with token.scope():
        await anyio.sleep(0.5)
        token._finish()
    await anyio.sleep(2.0)
    assert not token.cancel(CancelReason.EXPLICIT)
    assert not token.cancelled
    assert token.reason is None
    assert calls == []


class _GoneProbe:
    """A client connection that is always closed (a server adapter's exchange, say)."""

    def gone(self) -> bool:
        return True


async def test_a_hang_up_at_the_deadline_is_the_deadline() -> None:
    """A client hanging up within HANG_UP_AT_DEADLINE of the token's deadline gave up
    because of it (its own deadline is the same budget, started a trip earlier): the
    token fires DEADLINE; earlier, CLIENT_DISCONNECTED."""
    near = CancelToken(timeout=0.03)
    near._watch_peer(_GoneProbe())
    assert near.reason is CancelReason.DEADLINE
    far = CancelToken(timeout=10.0)
    far._watch_peer(_GoneProbe())
    assert far.reason is CancelReason.CLIENT_DISCONNECTED
    none = CancelToken()
    assert none.hang_up_reason() is CancelReason.CLIENT_DISCONNECTED
