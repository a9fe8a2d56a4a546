"""Shared test setup: every ``async def`` test runs under anyio on asyncio."""

from __future__ import annotations

import inspect
from typing import Any

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: Any) -> None:
    """Mark coroutine tests for the anyio plugin, so no test forgets the marker.

    It has to happen before the test is collected: the anyio plugin
    parametrises marked tests over backends at collection time.
    """
    if collector.funcnamefilter(name) and inspect.iscoroutinefunction(obj):  # type: ignore[attr-defined]
        pytest.mark.anyio(obj)


@pytest.fixture
def anyio_backend() -> str:
    """Integration tests run on the real asyncio loop."""
    return "asyncio"
