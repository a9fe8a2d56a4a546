"""LoggingObserver: one redacted, structured line per call and per breaker change."""

from __future__ import annotations

import logging

import pytest

import aio_client as ac
from aio_client import CircuitBreaker
from aio_client.metrics import LoggingObserver
from aio_client.transports import MemoryTransport

from .helpers import Script, client_for


async def test_one_line_per_call_with_the_events_fields(caplog: pytest.LogCaptureFixture) -> None:
    """A retried call logs once, with method, route, endpoint, outcome and attempts."""
    strategy = ac.sequential_strategy(3, ac.constant_delays(0.0))
    with caplog.at_level(logging.INFO, logger="aio_client.calls"):
        async with client_for(
            Script([ac.Response(503), ac.Response(200)]),
            strategy=strategy,
            observers=[LoggingObserver()],
        ) as client:
            await client.request(ac.get("users/{id}", path_params={"id": 7}))
    [record] = caplog.records
    assert record.levelno == logging.INFO
    message = record.getMessage()
    assert message.startswith("call method=GET route=users/{id} endpoint=http://svc ")
    assert "outcome=2xx status=200" in message
    assert "attempts=2 winner=2" in message
    fields = record.__dict__["aio_client"]
    assert fields["attempts"] == 2
    assert fields["status"] == 200


async def test_failures_log_at_the_failure_level_without_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An error logs at WARNING with its kind; no header, query or error message leaks."""
    with caplog.at_level(logging.INFO, logger="aio_client.calls"):
        async with client_for(Script([5.0]), observers=[LoggingObserver()]) as client:
            with pytest.raises(ac.DeadlineExceededError):
                await client.request(
                    ac.get(
                        "items",
                        query={"token": "s3cret-query"},
                        headers={"Authorization": "Bearer s3cret-header"},
                    ),
                    timeout=0.05,
                )
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "outcome=deadline_exceeded" in message
    assert "error=DeadlineExceededError" in message
    assert "s3cret" not in message
    assert "s3cret" not in repr(record.__dict__["aio_client"])


async def test_breaker_changes_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A breaker opening logs one line naming the breaker and both states."""
    with caplog.at_level(logging.WARNING, logger="aio_client.calls"):
        async with ac.Client(
            MemoryTransport(Script([ac.Response(500)])),
            "http://svc",
            strategy=ac.single_attempt_strategy(),
            circuit_breaker=CircuitBreaker(failure_threshold=1),
            observers=[LoggingObserver()],
        ) as client:
            await client.request(ac.get("a"))
    messages = [r.getMessage() for r in caplog.records]
    assert "circuit_breaker breaker=http://svc:80 from=closed to=open" in messages


async def test_a_disabled_logger_skips_the_call(caplog: pytest.LogCaptureFixture) -> None:
    """With the logger's level above both levels, the observer watches nothing."""
    observer = LoggingObserver(logging.getLogger("aio_client.quiet"))
    logging.getLogger("aio_client.quiet").setLevel(logging.ERROR)
    try:
        async with client_for(Script([ac.Response(500)]), observers=[observer]) as client:
            await client.request(ac.get("a"))
    finally:
        logging.getLogger("aio_client.quiet").setLevel(logging.NOTSET)
    assert [r for r in caplog.records if r.name == "aio_client.quiet"] == []


def test_values_with_spaces_or_quotes_are_quoted() -> None:
    """A route with a space or quote stays one logfmt value."""
    from aio_client.metrics._logging import _logfmt

    assert _logfmt({"route": 'a b"c', "n": 1, "e": ""}) == 'route="a b\\"c" n=1 e=""'
    assert _logfmt({"route": "a\nb"}) == 'route="a\\x0ab"'


def test_bad_settings_are_config_errors() -> None:
    """max_endpoints must be an int >= 1, levels ints (logging's), logger a Logger or a name."""
    with pytest.raises(ac.ConfigError, match="max_endpoints"):
        LoggingObserver(max_endpoints=0)
    with pytest.raises(ac.ConfigError, match="failure_level"):
        LoggingObserver(failure_level="WARNING")  # type: ignore[arg-type]
    with pytest.raises(ac.ConfigError, match="level"):
        LoggingObserver(level=-1)
    with pytest.raises(ac.ConfigError, match="logger"):
        LoggingObserver(3)  # type: ignore[arg-type]
