"""Shared test setup: every ``async def`` test runs under anyio on asyncio."""

from __future__ import annotations

import inspect

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark coroutine tests for the anyio plugin, so no test forgets the marker."""
    for item in items:
        function = getattr(item, "function", None)
        if function is not None and inspect.iscoroutinefunction(function):
            item.add_marker(pytest.mark.anyio)


@pytest.fixture
def anyio_backend() -> str:
    """Integration tests run on the real asyncio loop."""
    return "asyncio"
