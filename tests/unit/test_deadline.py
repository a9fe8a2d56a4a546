"""Deadlines, the ambient scope, and the header codecs."""

from __future__ import annotations

import math

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

import aio_client as ac
from aio_client._deadline import (
    _parse_decimal,
    format_timeout_header,
    parse_envoy_timeout,
    parse_grpc_timeout,
    parse_timeout_header,
)


async def test_deadline_remaining_and_expired() -> None:
    """remaining() counts down on the loop clock and stops at zero."""
    deadline = ac.Deadline.from_timeout(2.0)
    assert deadline.remaining() == pytest.approx(2.0)
    await anyio.sleep(1.5)
    assert deadline.remaining() == pytest.approx(0.5)
    assert not deadline.expired
    await anyio.sleep(1.0)
    assert deadline.remaining() == 0.0
    assert deadline.expired


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "1", None])
def test_bad_timeouts_rejected(bad: object) -> None:
    """from_timeout rejects negative, NaN, infinite and non-numbers with ConfigError."""
    with pytest.raises(ac.ConfigError, match="timeout"):
        ac.Deadline.from_timeout(bad)  # type: ignore[arg-type]


async def test_ambient_never_extends_inherited_budget() -> None:
    """A nested ambient block can shorten the inherited deadline, never extend it."""
    assert ac.current_deadline() is None
    with ac.ambient(timeout=1.0, priority="low") as outer:
        assert ac.current_priority() is ac.Priority.LOW
        with ac.ambient(timeout=10.0) as inner:
            assert inner == outer
        with ac.ambient(timeout=0.1, priority=ac.Priority.HIGH) as shorter:
            assert shorter is not None
            assert outer is not None
            assert shorter < outer
            assert ac.current_priority() is ac.Priority.HIGH
        assert ac.current_deadline() == outer
    assert ac.current_deadline() is None
    assert ac.current_priority() is None


async def test_ambient_is_inherited_by_child_tasks() -> None:
    """Tasks started inside an ambient block see its deadline."""
    seen: list[ac.Deadline | None] = []

    async def child() -> None:
        seen.append(ac.current_deadline())

    with ac.ambient(timeout=3.0) as deadline:
        async with anyio.create_task_group() as tg:
            tg.start_soon(child)
    assert seen == [deadline]


def test_unknown_priority_string_rejected() -> None:
    """An unknown priority string is a ConfigError naming the allowed values."""
    with pytest.raises(ac.ConfigError, match="'high', 'normal', 'low'"):
        ac.ambient(priority="urgent")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1.5", 1.5),
        (" 0.250 ", 0.25),
        ("3", 3.0),
        (".5", 0.5),
        ("86400", 86400.0),
        ("1.9999864580000003", 1.9999864580000003),
        ("5e-05", 5e-05),
    ],
)
def test_timeout_header_accepts_decimals(value: str, expected: float) -> None:
    """X-Request-Timeout decimal seconds decode to floats."""
    assert parse_timeout_header(value) == expected


@pytest.mark.parametrize(
    "value", ["", "-1", "nan", "inf", "1e3", "1,5", "0x10", "86401", "1.5s", "\u0661"]
)
def test_timeout_header_rejects_garbage(value: str) -> None:
    """Malformed, negative, non-ASCII or absurd X-Request-Timeout values read as absent."""
    assert parse_timeout_header(value) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [("250m", 0.25), ("2S", 2.0), ("1M", 60.0), ("1H", 3600.0), ("500u", 0.0005), ("7n", 7e-9)],
)
def test_grpc_timeout(value: str, expected: float) -> None:
    """grpc-timeout units decode to seconds."""
    assert parse_grpc_timeout(value) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["", "250", "123456789S", "1x", "-1S", "25H"])
def test_grpc_timeout_rejects_garbage(value: str) -> None:
    """Malformed or absurd grpc-timeout values read as absent."""
    assert parse_grpc_timeout(value) is None


def test_envoy_timeout() -> None:
    """x-envoy-expected-rq-timeout-ms is integer milliseconds."""
    assert parse_envoy_timeout("1500") == 1.5
    assert parse_envoy_timeout("1.5") is None
    assert parse_envoy_timeout("-5") is None


@given(st.floats(min_value=0.0, max_value=86_000.0, allow_nan=False))
def test_timeout_header_round_trip(seconds: float) -> None:
    """Encoding then decoding keeps the budget to the millisecond."""
    decoded = parse_timeout_header(format_timeout_header(seconds))
    assert decoded is not None
    assert 0.0 <= seconds - decoded < 0.001 + 1e-9


@given(st.text(max_size=30))
def test_header_parsers_never_raise(value: str) -> None:
    """Any header text decodes to a believable number or None, never an exception."""
    for parse in (parse_timeout_header, parse_grpc_timeout, parse_envoy_timeout):
        result = parse(value)
        assert result is None or 0.0 <= result <= 86_400.0


@given(st.text(alphabet="0123456789.eE-+ _\u0661x", max_size=24))
def test_timeout_header_fast_path_keeps_the_grammar(value: str) -> None:
    """The quick read of plain decimals decides exactly as the header's regular expression."""
    reference = _parse_decimal(value)
    expected = reference if 0.0 <= reference <= 86_400.0 else None
    assert parse_timeout_header(value) == expected
