"""Unit tests run on a virtual-time loop: sleeps and deadlines pass instantly."""

from __future__ import annotations

import functools
from typing import Any

import looptime
import pytest


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    """asyncio whose clock jumps ahead whenever every task is waiting on a timer."""
    return ("asyncio", {"loop_factory": functools.partial(looptime.new_event_loop, start=0.0)})
