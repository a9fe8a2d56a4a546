"""Unit tests run on a virtual-time loop: sleeps and deadlines pass instantly."""

from __future__ import annotations

from typing import Any

import pytest

from aio_client.testing import VirtualTimeLoop


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    """asyncio whose clock jumps ahead whenever every task is waiting on a timer
    (aio_client.testing's own, so the kit is exercised by every unit test)."""
    return ("asyncio", {"loop_factory": VirtualTimeLoop})
