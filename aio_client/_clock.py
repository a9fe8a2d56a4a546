"""The one clock deadlines are measured on.

Deadlines must be comparable with the cancel scopes that enforce them, and those
run on the event loop's clock. On asyncio that is ``loop.time()`` (monotonic by
default, virtual under a test loop); on trio it is ``trio.current_time()``.
Outside any event loop the process's monotonic clock stands in.
"""

from __future__ import annotations

import sys
import time
from asyncio import _get_running_loop

__all__ = ["now"]


def now() -> float:
    """Seconds on the running event loop's monotonic clock."""
    loop = _get_running_loop()
    if loop is not None:
        return loop.time()
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            return float(trio.current_time())
        except RuntimeError:
            pass
    return time.monotonic()
