"""@circuit: aiocircuitbreaker's documented usage runs unchanged, minus its bugs."""

from __future__ import annotations

import textwrap
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

import aio_client as ac
from aio_client import CircuitBreaker
from aio_client import CircuitOpenError as CircuitBreakerError
from aio_client.policies._circuit import circuit

# The examples of aiocircuitbreaker 2.0.0's README, verbatim.
README_BARE = """
from aiocircuitbreaker import circuit

@circuit
async def external_call():
    ...
"""
README_CONFIGURED = """
from aiocircuitbreaker import circuit

@circuit(failure_threshold=10, expected_exception=ConnectionError)
async def external_call():
    ...
"""
README_SUBCLASS = """
from aiocircuitbreaker import CircuitBreaker

class MyCircuitBreaker(CircuitBreaker):
    FAILURE_THRESHOLD = 10
    RECOVERY_TIMEOUT = 60
    EXPECTED_EXCEPTION = RequestException
"""
README_SUBCLASS_INSTANCE = """
@MyCircuitBreaker()
async def external_call():
    ...
"""
README_SUBCLASS_PROXY = """
@circuit(cls=MyCircuitBreaker)
async def external_call():
    ...
"""


class RequestException(IOError):  # noqa: N818 - the README's name
    """Stands in for requests' exception, which the README's subclass example names."""


def run_readme(*sources: str, body: str | None = None, **names: object) -> dict[str, Any]:
    """Execute README snippets with only the import changed; return their namespace.

    With ``body``, the placeholder body ``...`` of ``external_call`` is replaced by
    it, so the documented behaviour can be observed on the README's own decorators.
    """
    namespace: dict[str, Any] = {"RequestException": RequestException, **names}
    exec("from aio_client.policies import circuit", namespace)
    for source in sources:
        code = textwrap.dedent(source).replace(
            "from aiocircuitbreaker import", "from aio_client.policies import"
        )
        if body is not None:
            code = code.replace("    ...", f"    {body}")
        exec(compile(code, "<README>", "exec"), namespace)
    return namespace


class Dependency:
    """What ``external_call`` calls: fails while ``error`` is set; counts calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.error: Exception | None = None
        self.gate: anyio.Event | None = None

    async def __call__(self, *args: object, **kwargs: object) -> str:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return "ok"


async def failing_calls(call: Callable[[], Awaitable[Any]], error: type[Exception], n: int) -> None:
    for _ in range(n):
        with pytest.raises(error):
            await call()


@pytest.mark.parametrize(
    "sources",
    [
        (README_BARE,),
        (README_CONFIGURED,),
        (README_SUBCLASS, README_SUBCLASS_INSTANCE),
        (README_SUBCLASS, README_SUBCLASS_PROXY),
    ],
    ids=["bare", "configured", "subclass-instance", "subclass-proxy"],
)
async def test_readme_examples_run_unchanged(sources: tuple[str, ...]) -> None:
    """Each README example, with only its import changed, defines a working external_call."""
    namespace = run_readme(*sources)
    assert await namespace["external_call"]() is None
    assert namespace["external_call"].__name__ == "external_call"


async def test_bare_circuit_behaves_as_the_readme_says() -> None:
    """5 failures open it, 30 s later exactly one test call runs, its success closes it."""
    dependency = Dependency()
    namespace = run_readme(README_BARE, body="return await dependency()", dependency=dependency)
    external_call = namespace["external_call"]
    dependency.error = ValueError("any Exception counts")
    await failing_calls(external_call, ValueError, 5)
    with pytest.raises(CircuitBreakerError) as info:
        await external_call()
    assert dependency.calls == 5
    assert "'external_call'" in str(info.value)  # named after the function
    assert info.value.retry_after == pytest.approx(30.0)
    await anyio.sleep(30.0)
    dependency.error = None
    dependency.gate = anyio.Event()
    outcomes: list[str] = []

    async def caller() -> None:
        try:
            outcomes.append(await external_call())
        except CircuitBreakerError:
            outcomes.append("refused")

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(caller)
        await anyio.wait_all_tasks_blocked()
        assert dependency.calls == 6  # one test execution, not fifty
        dependency.gate.set()
    assert sorted(outcomes) == ["ok"] + ["refused"] * 49
    dependency.gate = None
    assert await external_call() == "ok"  # closed again


async def test_configured_circuit_counts_only_the_expected_exception() -> None:
    """failure_threshold=10, expected_exception=ConnectionError: other errors do not count."""
    dependency = Dependency()
    namespace = run_readme(
        README_CONFIGURED, body="return await dependency()", dependency=dependency
    )
    external_call = namespace["external_call"]
    dependency.error = ConnectionError("down")
    await failing_calls(external_call, ConnectionError, 9)
    dependency.error = KeyError("a bug, not an outage")
    await failing_calls(external_call, KeyError, 3)  # neither counted nor a reset
    dependency.error = ConnectionError("down")
    await failing_calls(external_call, ConnectionError, 1)
    with pytest.raises(CircuitBreakerError):
        await external_call()


@pytest.mark.parametrize("usage", [README_SUBCLASS_INSTANCE, README_SUBCLASS_PROXY])
async def test_subclass_attributes_set_the_defaults(usage: str) -> None:
    """FAILURE_THRESHOLD=10, RECOVERY_TIMEOUT=60, EXPECTED_EXCEPTION apply, both ways."""
    dependency = Dependency()
    namespace = run_readme(
        README_SUBCLASS, usage, body="return await dependency()", dependency=dependency
    )
    external_call = namespace["external_call"]
    dependency.error = KeyError("not a RequestException")
    await failing_calls(external_call, KeyError, 12)
    dependency.error = RequestException("down")
    await failing_calls(external_call, RequestException, 10)
    with pytest.raises(CircuitBreakerError) as info:
        await external_call()
    assert info.value.retry_after == pytest.approx(60.0)
    await anyio.sleep(59.0)
    with pytest.raises(CircuitBreakerError):
        await external_call()
    await anyio.sleep(1.0)
    dependency.error = None
    assert await external_call() == "ok"


async def test_fallback_function_gets_the_same_arguments_when_open() -> None:
    """When open, fallback_function (sync or async) is called with the call's arguments."""
    seen: list[tuple[object, ...]] = []

    def sync_fallback(*args: object, **kwargs: object) -> str:
        seen.append((*args, kwargs))
        return "sync fallback"

    async def async_fallback(*args: object, **kwargs: object) -> str:
        seen.append((*args, kwargs))
        return "async fallback"

    for fallback, expected in (
        (sync_fallback, "sync fallback"),
        (async_fallback, "async fallback"),
    ):

        @circuit(failure_threshold=1, fallback_function=fallback)
        async def fetch(item: int, *, verbose: bool = False) -> str:
            raise ConnectionError("down")

        with pytest.raises(ConnectionError):
            await fetch(1)
        assert await fetch(7, verbose=True) == expected
    assert seen == [(7, {"verbose": True}), (7, {"verbose": True})]


async def test_fallback_class_attribute_is_used_unbound() -> None:
    """FALLBACK_FUNCTION on a subclass is called with the call's arguments, not with self."""

    async def degraded(item: int) -> str:
        return f"cached {item}"

    class WithFallback(CircuitBreaker):
        FAILURE_THRESHOLD = 1
        FALLBACK_FUNCTION = degraded

    @circuit(cls=WithFallback)
    async def fetch(item: int) -> str:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        await fetch(1)
    assert await fetch(2) == "cached 2"


async def test_default_name_is_the_qualified_name() -> None:
    """Unnamed breakers take the decorated function's __qualname__; name= wins."""

    @circuit(failure_threshold=1)
    async def nested() -> None:
        raise ConnectionError("down")

    @circuit(failure_threshold=1, name="payments")
    async def named() -> None:
        raise ConnectionError("down")

    for function, name in (
        (nested, "test_default_name_is_the_qualified_name.<locals>.nested"),
        (named, "payments"),
    ):
        with pytest.raises(ConnectionError):
            await function()
        with pytest.raises(CircuitBreakerError, match=name.replace(".", r"\.")):
            await function()


async def test_parametrised_circuit_returns_the_breaker() -> None:
    """circuit(...) returns the CircuitBreaker, so it can be kept and inspected."""
    breaker = circuit(failure_threshold=2, recovery_timeout=5)
    assert isinstance(breaker, CircuitBreaker)

    @breaker
    async def fetch() -> None:
        raise ConnectionError("down")

    await failing_calls(fetch, ConnectionError, 2)
    assert breaker.opened
    assert breaker.name.endswith("fetch")
    assert breaker.open_remaining == pytest.approx(5.0)
    assert isinstance(breaker.last_failure, ConnectionError)


async def test_cancellation_does_not_reset_the_count() -> None:
    """Unlike aiocircuitbreaker, a cancelled call is not a success: the count stands."""
    fail_now = True

    @circuit(failure_threshold=3)
    async def fetch() -> None:
        if fail_now:
            raise ConnectionError("down")
        await anyio.sleep_forever()

    await failing_calls(fetch, ConnectionError, 2)
    fail_now = False
    with anyio.move_on_after(1.0):
        await fetch()
    fail_now = True
    await failing_calls(fetch, ConnectionError, 1)
    with pytest.raises(CircuitBreakerError):
        await fetch()


def test_circuit_refuses_a_foreign_cls_and_sync_functions() -> None:
    """cls must be a CircuitBreaker subclass; the decorated function must be async."""
    with pytest.raises(ac.ConfigError, match="cls"):
        circuit(cls=dict)  # type: ignore[arg-type]
    with pytest.raises(ac.ConfigError, match="async"):
        circuit(lambda: None)  # type: ignore[arg-type, return-value]  # deliberately sync
