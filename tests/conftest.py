"""Shared test setup: every ``async def`` test runs under anyio on asyncio."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import pytest

from aio_client._call import _HEDGED


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


@pytest.fixture(autouse=True)
def _no_hedged_call_left_registered() -> Iterator[None]:
    """Every hedged call takes itself out of the pool gates' registry, however it ends."""
    yield
    assert not _HEDGED, f"hedged calls still registered: {_HEDGED}"
