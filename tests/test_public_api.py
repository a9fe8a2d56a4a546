"""The public surface: exports, typing marker, and optional backends."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aio_client
import aio_client.compat
import aio_client.compat.aiocircuitbreaker
import aio_client.metrics
import aio_client.policies
import aio_client.server
import aio_client.strategies
import aio_client.transports

PACKAGES = [
    aio_client,
    aio_client.compat,
    aio_client.compat.aiocircuitbreaker,
    aio_client.metrics,
    aio_client.policies,
    aio_client.server,
    aio_client.strategies,
    aio_client.transports,
]


def _isort_style(name: str) -> tuple[int, str]:
    # ruff's RUF022 order: CONSTANTS, then Classes, then functions.
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted_and_complete() -> None:
    """Each package's __all__ is sorted, unique, and names only things that exist."""
    for module in PACKAGES:
        names = list(module.__all__)
        assert names == sorted(names, key=_isort_style), module.__name__
        assert len(names) == len(set(names)), module.__name__
        for name in names:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"


def test_every_public_name_is_exported() -> None:
    """Every public attribute of the top-level package is listed in __all__."""
    public = {
        name
        for name, value in vars(aio_client).items()
        if not name.startswith("_") and not isinstance(value, type(sys))
    }
    assert public == set(aio_client.__all__)


def test_py_typed_marker_ships() -> None:
    """The package carries py.typed for type checkers."""
    assert (Path(aio_client.__file__).parent / "py.typed").is_file()


def test_import_works_without_optional_backends() -> None:
    """`import aio_client` and the memory transport work with aiohttp and httpx absent."""
    code = (
        "import sys\n"
        "for name in ('aiohttp', 'httpx', 'yarl', 'httpcore'):\n"
        "    sys.modules[name] = None\n"
        "import aio_client, aio_client.transports\n"
        "from aio_client.transports import MemoryTransport\n"
        "assert 'aiohttp' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "try:\n"
        "    aio_client.transports.AiohttpTransport\n"
        "except ImportError:\n"
        "    print('lazy')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "lazy"


def test_refused_error_catches_every_local_refusal() -> None:
    """``except RefusedError`` catches breaker, bulkhead and rate-limit refusals, retry_after."""
    refusals = [
        aio_client.CircuitOpenError("open", retry_after=1.5),
        aio_client.BulkheadFullError("full"),
        aio_client.RateLimitedError("limited", retry_after=0.25),
    ]
    caught: list[tuple[str, float, bool]] = []
    for refusal in refusals:
        try:
            raise refusal
        except aio_client.RefusedError as exc:
            caught.append((type(exc).__name__, exc.retry_after, exc.may_have_reached_server))
    assert caught == [
        ("CircuitOpenError", 1.5, False),
        ("BulkheadFullError", 0.0, False),
        ("RateLimitedError", 0.25, False),
    ]
    assert aio_client.policies.CircuitBreakerError is aio_client.CircuitOpenError
    assert isinstance(refusals[1], RuntimeError)
    assert isinstance(refusals[2], RuntimeError)


def test_aiocircuitbreaker_compat_exports_exactly_its_names() -> None:
    """aio_client.compat.aiocircuitbreaker exports aiocircuitbreaker 2.0's four public names."""
    compat = aio_client.compat.aiocircuitbreaker
    assert compat.__all__ == ["CircuitBreaker", "CircuitBreakerError", "State", "circuit"]
    public = {
        name
        for name, value in vars(compat).items()
        if not name.startswith("_")
        and not isinstance(value, type(sys))
        and getattr(value, "__module__", None) == compat.__name__
    }
    assert public == set(compat.__all__)
    assert aio_client.compat.__all__ == []
    assert issubclass(compat.CircuitBreakerError, aio_client.CircuitOpenError)
