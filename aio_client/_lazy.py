"""Names a package resolves on first use: one ``__getattr__`` for every package that needs one.

Two uses: a sink or adapter imported only when first named (so
``import aio_client.metrics`` needs neither prometheus-client nor
OpenTelemetry), and names whose one home is elsewhere but which a package
still resolves for code that imported them from there.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(package: str, table: Mapping[str, tuple[str, str]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``name -> (module, attribute)``.

    ``module`` is absolute, or relative to ``package``; an unknown name is an
    ``AttributeError`` naming it.
    """

    def resolve(name: str) -> Any:
        found = table.get(name)
        if found is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attribute = found
        return getattr(importlib.import_module(module, package), attribute)

    return resolve
