"""Server side: a caller's header cannot buy a long budget; sync handlers can stop on time."""

from __future__ import annotations

import threading
import time
from typing import Any

import aiohttp
import anyio
import anyio.lowlevel
import pytest
from fastapi import FastAPI

import aio_client as ac
from aio_client.server import CancelTokenDep, DeadlineMiddleware
from aio_client.server._core import DEFAULT_MAX_TIMEOUT, Admission, ServerCore
from tests.integration.servers import serve_uvicorn


def _budget(core: ServerCore, timeout_header: str | None) -> float:
    headers = [] if timeout_header is None else [("x-request-timeout", timeout_header)]
    admission = core.admit(headers)
    assert isinstance(admission, Admission)
    return admission.budget


def test_the_budget_ceiling_is_finite_by_default() -> None:
    """Without max_timeout, a header asking for 86,000 s gets DEFAULT_MAX_TIMEOUT (60 s)."""
    core = ServerCore()
    assert core.max_timeout == DEFAULT_MAX_TIMEOUT == 60.0
    assert _budget(core, "86000") == 60.0
    assert _budget(core, "2.5") == 2.5  # shortening is always allowed
    assert _budget(core, None) == 20.0


def test_a_longer_default_timeout_raises_the_ceiling_to_it() -> None:
    """A server whose own default budget exceeds 60 s keeps it as the ceiling."""
    core = ServerCore(timeout=120.0)
    assert core.max_timeout == 120.0
    assert _budget(core, "86000") == 120.0


def test_an_explicit_max_timeout_is_the_ceiling() -> None:
    """max_timeout set by the server wins, above or below the default."""
    assert _budget(ServerCore(max_timeout=600.0), "86000") == 600.0
    assert _budget(ServerCore(max_timeout=3.0), "86000") == 3.0
    with pytest.raises(ac.ConfigError, match="max_timeout"):
        ServerCore(max_timeout=0.0)


async def test_a_huge_header_reaches_a_handler_capped() -> None:
    """Over uvicorn: X-Request-Timeout: 86000 gives the handler at most 60 s."""
    app = FastAPI()
    app.add_middleware(DeadlineMiddleware)

    @app.get("/budget")
    async def budget() -> dict[str, Any]:
        deadline = ac.current_deadline()
        return {"remaining": deadline.remaining() if deadline else None}

    async with (
        serve_uvicorn(app) as url,
        aiohttp.ClientSession() as session,
        session.get(f"{url}/budget", headers={"X-Request-Timeout": "86000"}) as resp,
    ):
        body = await resp.json()
    assert 59.0 < body["remaining"] <= 60.0


async def test_a_sync_endpoint_can_check_its_token_from_the_worker_thread() -> None:
    """A `def` endpoint polling token.raise_if_cancelled() stops before its side effect."""
    app = FastAPI()
    app.add_middleware(DeadlineMiddleware)
    seen: dict[str, Any] = {}
    done = threading.Event()

    @app.get("/slow-sync")
    def slow_sync(token: CancelTokenDep) -> str:
        seen["thread"] = threading.get_ident()
        try:
            for _ in range(200):  # 2 s of work in 10 ms steps
                token.raise_if_cancelled()
                time.sleep(0.01)
            seen["side_effect"] = True
            return "done"
        except ac.TokenCancelledError as exc:
            seen["reason"] = exc.reason
            seen["cancelled"] = token.cancelled
            raise
        finally:
            done.set()

    async with serve_uvicorn(app) as url, aiohttp.ClientSession() as session:
        started = anyio.current_time()
        async with session.get(f"{url}/slow-sync", headers={"X-Request-Timeout": "0.3"}) as resp:
            status = resp.status
        took = anyio.current_time() - started
        with anyio.fail_after(2):
            while not done.is_set():  # noqa: ASYNC110 - a thread's event, polled
                await anyio.sleep(0.01)
    assert status == 504
    assert took < 1.0
    assert seen["thread"] != threading.get_ident()
    assert seen["reason"] is ac.CancelReason.DEADLINE
    assert seen["cancelled"] is True
    assert "side_effect" not in seen


async def test_token_state_reads_are_safe_from_a_thread() -> None:
    """Reads from another thread see a passed deadline; the firing itself runs on the loop."""
    token = ac.CancelToken(timeout=0.05)
    fired_on: list[int] = []
    token.on_cancel(lambda: fired_on.append(threading.get_ident()))
    assert await anyio.to_thread.run_sync(lambda: token.cancelled) is False
    await anyio.sleep(0.06)
    # No scope is open, so no timer has fired the token: the thread's look is the first.
    seen = await anyio.to_thread.run_sync(lambda: (token.cancelled, token.reason))
    assert seen == (True, ac.CancelReason.DEADLINE)
    with pytest.raises(ac.TokenCancelledError):
        await anyio.to_thread.run_sync(token.raise_if_cancelled)
    await anyio.lowlevel.checkpoint()  # the firing the thread asked for runs on the loop
    assert fired_on == [threading.get_ident()]
    assert token.reason is ac.CancelReason.DEADLINE
