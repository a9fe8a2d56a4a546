"""The public surface: exports, typing marker, and optional backends."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types
from pathlib import Path

import pytest

import aio_client
import aio_client.compat
import aio_client.compat.aiocircuitbreaker
import aio_client.policies
import aio_client.testing

# The whole public surface, namespace by namespace: adding, moving or removing a
# public name fails here until this snapshot (and the README) say so. Each name
# has one home; aio_client.compat.aiocircuitbreaker deliberately reuses
# aiocircuitbreaker's names for its own objects.
SURFACE: dict[str, list[str]] = {
    "aio_client": [
        "AioClientError",
        "AttemptInfo",
        "AttemptKind",
        "AttemptRecord",
        "Bulkhead",
        "BulkheadFullError",
        "Call",
        "CancelReason",
        "CancelToken",
        "CircuitBreaker",
        "CircuitOpenError",
        "CircuitState",
        "Client",
        "ConfigError",
        "ConnectError",
        "Deadline",
        "DeadlineExceededError",
        "EndpointProvider",
        "Fallback",
        "FanOut",
        "FanOutStoppedError",
        "HTTPStatusError",
        "Handler",
        "Headers",
        "HeadersInput",
        "InvalidRequestError",
        "NetworkError",
        "Priority",
        "ProtocolError",
        "QueryInput",
        "RateLimitedError",
        "RateLimiter",
        "RefusedError",
        "Request",
        "RequestContext",
        "Response",
        "ResponseTooLargeError",
        "RetryBudget",
        "ServerSentEvent",
        "Stage",
        "Strategy",
        "StreamBody",
        "StreamContext",
        "StreamedResponse",
        "Timeout",
        "TokenCancelledError",
        "TransportError",
        "adaptive_delays",
        "ambient",
        "constant_delays",
        "current_attempt",
        "current_deadline",
        "current_priority",
        "current_token",
        "delete",
        "exponential_delays",
        "fan_out",
        "get",
        "head",
        "linear_delays",
        "options",
        "parallel_strategy",
        "pass_deadline_through",
        "patch",
        "post",
        "put",
        "redact_headers",
        "request",
        "retry",
        "sequential_strategy",
        "single_attempt_strategy",
        "split_deadline_between_attempts",
    ],
    "aio_client.compat": [],
    "aio_client.compat.aiocircuitbreaker": [
        "CircuitBreaker",
        "CircuitBreakerError",
        "State",
        "circuit",
    ],
    "aio_client.metrics": [
        "DEFAULT_BUCKETS",
        "AttemptFinished",
        "AttemptStarted",
        "BreakerChanged",
        "CallFinished",
        "CallStarted",
        "CallWatcher",
        "ExtraAttemptRefused",
        "LoggingObserver",
        "Observer",
        "OpenTelemetryInstrumentation",
        "OpenTelemetryServerObserver",
        "PrometheusMetrics",
        "PrometheusServerObserver",
    ],
    "aio_client.policies": [
        "BreakerTicket",
        "CircuitBreakerStage",
        "Policy",
        "PolicyStage",
        "StateListener",
        "as_stage",
        "default_is_failure",
        "endpoint_key",
        "parse_rate",
    ],
    "aio_client.server": [
        "AiohttpDeadlineMiddleware",
        "CancelTokenDep",
        "ClientInfo",
        "DeadlineMiddleware",
        "PriorityLoadShedder",
        "ServerOptions",
        "ServerOutcome",
        "ServerOutcomeKind",
        "ServerStats",
        "TrustedPeers",
        "aiohttp_middleware",
        "fastapi_max_timeout",
        "get_cancel_token",
        "guard_dependency",
        "guarded",
        "max_timeout",
        "sse_stream",
        "status_of_refusal",
        "trusted_peers",
    ],
    "aio_client.server.sanic": [
        "SanicDeadline",
        "setup",
    ],
    "aio_client.strategies": [
        "AttemptTimeout",
        "Classifier",
        "Delays",
        "HedgeDelays",
        "Verdict",
        "default_classifier",
    ],
    "aio_client.testing": [
        "ChaosTransport",
        "Delayed",
        "ScriptedTransport",
        "Step",
        "VirtualTimeLoop",
    ],
    "aio_client.transports": [
        "AiohttpTransport",
        "BodyStream",
        "Httpx2Transport",
        "HttpxTransport",
        "MemoryTransport",
        "StreamingTransport",
        "Transport",
        "backend_timeout",
        "response_size_limit",
    ],
}
# Names a namespace still resolves (lazily, not in its __all__) for code that
# imported them from there; each is the object of its one home.
ELSEWHERE: dict[str, dict[str, str]] = {
    "aio_client": {
        "CircuitBreakerError": "aio_client.CircuitOpenError",
        "circuit": "aio_client.policies._circuit.circuit",
    },
    "aio_client.policies": {
        "Bulkhead": "aio_client.Bulkhead",
        "BulkheadFullError": "aio_client.BulkheadFullError",
        "CircuitBreaker": "aio_client.CircuitBreaker",
        "CircuitBreakerError": "aio_client.CircuitOpenError",
        "CircuitOpenError": "aio_client.CircuitOpenError",
        "CircuitState": "aio_client.CircuitState",
        "Fallback": "aio_client.Fallback",
        "RateLimitedError": "aio_client.RateLimitedError",
        "RateLimiter": "aio_client.RateLimiter",
        "Retry": "aio_client.policies._retry.Retry",
        "Timeout": "aio_client.Timeout",
        "circuit": "aio_client.policies._circuit.circuit",
        "retry": "aio_client.retry",
    },
    "aio_client.strategies": {
        "AdaptiveDelays": "aio_client.strategies._adaptive.AdaptiveDelays",
        "ParallelStrategy": "aio_client.strategies._parallel.ParallelStrategy",
        "RetryBudget": "aio_client.RetryBudget",
        "SequentialStrategy": "aio_client.strategies._sequential.SequentialStrategy",
        "SingleAttemptStrategy": "aio_client.strategies._single.SingleAttemptStrategy",
        "Strategy": "aio_client.Strategy",
        "adaptive_delays": "aio_client.adaptive_delays",
        "constant_delays": "aio_client.constant_delays",
        "exponential_delays": "aio_client.exponential_delays",
        "linear_delays": "aio_client.linear_delays",
        "parallel_strategy": "aio_client.parallel_strategy",
        "pass_deadline_through": "aio_client.pass_deadline_through",
        "sequential_strategy": "aio_client.sequential_strategy",
        "single_attempt_strategy": "aio_client.single_attempt_strategy",
        "split_deadline_between_attempts": "aio_client.split_deadline_between_attempts",
    },
}


def _resolve(dotted: str) -> object:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _isort_style(name: str) -> tuple[int, str]:
    # ruff's RUF022 order: CONSTANTS, then Classes, then functions.
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


@pytest.mark.parametrize("namespace", sorted(SURFACE))
def test_the_public_surface_is_pinned(namespace: str) -> None:
    """Each namespace's __all__ is exactly the snapshot, sorted, and names real objects."""
    module = importlib.import_module(namespace)
    names = list(module.__all__)
    assert names == SURFACE[namespace]
    assert names == sorted(names, key=_isort_style)
    for name in names:
        assert getattr(module, name) is not None, f"{namespace}.{name}"


@pytest.mark.parametrize("namespace", sorted(SURFACE))
def test_nothing_public_hides_outside_all(namespace: str) -> None:
    """Every public attribute of a namespace is in its __all__ or a submodule: a name
    cannot be added (or left behind) without the snapshot noticing."""
    module = importlib.import_module(namespace)
    # A package's namespace holds only what it re-exports; a plain module also
    # holds what it imports for its own use, so there only its own definitions count.
    home = "aio_client" if hasattr(module, "__path__") else namespace
    ours = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and str(getattr(value, "__module__", "")).startswith(home)
    }
    assert ours - set(module.__all__) == set()


def test_each_name_has_one_home() -> None:
    """No name is listed by two namespaces (aiocircuitbreaker's drop-in excepted)."""
    homes: dict[str, list[str]] = {}
    for namespace, names in SURFACE.items():
        if namespace.startswith("aio_client.compat"):
            continue
        for name in names:
            homes.setdefault(name, []).append(namespace)
    assert {name: where for name, where in homes.items() if len(where) > 1} == {}


@pytest.mark.parametrize(
    ("namespace", "name"), [(ns, name) for ns, names in ELSEWHERE.items() for name in names]
)
def test_names_resolved_elsewhere_are_their_homes_objects(namespace: str, name: str) -> None:
    """A name a namespace still resolves for old imports is its home's very object,
    and is not listed in that namespace's __all__."""
    module = importlib.import_module(namespace)
    assert getattr(module, name) is _resolve(ELSEWHERE[namespace][name])
    assert name not in module.__all__
    assert set(getattr(module, "_ELSEWHERE", {})) == set(ELSEWHERE[namespace])


def test_unknown_names_are_attribute_errors() -> None:
    """A name no namespace has raises AttributeError naming it."""
    for namespace in ("aio_client", "aio_client.policies", "aio_client.strategies"):
        with pytest.raises(AttributeError, match="no_such_name"):
            getattr(importlib.import_module(namespace), "no_such_name")  # noqa: B009


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
