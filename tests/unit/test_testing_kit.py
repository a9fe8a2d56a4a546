"""aio_client.testing: the scripted and chaos transports and the virtual-time loop.

Every unit test also runs on ``VirtualTimeLoop`` (tests/unit/conftest.py) and most
script their server with ``ScriptedTransport`` (through tests/unit/helpers.Script).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter

import anyio
import pytest

import aio_client as ac
from aio_client.testing import ChaosTransport, Delayed, ScriptedTransport, VirtualTimeLoop

OK = ac.Response(200, content=b"ok")
NO_DELAY = ac.constant_delays(0.0)


async def test_steps_play_in_order_and_the_last_repeats() -> None:
    """Each request plays the next step; once the script is spent its last step repeats."""
    transport = ScriptedTransport(ac.Response(201), ac.Response(202))
    statuses = [(await transport.send(ac.get("x"))).status for _ in range(4)]
    assert statuses == [201, 202, 202, 202]
    assert len(transport.requests) == 4


async def test_routes_have_scripts_of_their_own() -> None:
    """A ``"METHOD template"`` or ``"template"`` key scripts that route; the rest use ``steps``."""
    transport = ScriptedTransport(
        ac.Response(404),
        routes={
            "GET users/{id}": [ac.Response(200)],
            "POST users/{id}": [ac.Response(503), ac.Response(201)],
            "health": [ac.Response(204)],
        },
    )
    async with ac.Client(
        transport, "http://svc", strategy=ac.sequential_strategy(3, NO_DELAY)
    ) as c:
        got = await c.get("users/{id}", path_params={"id": 1})
        created = await c.post("users/{id}", path_params={"id": 2}, idempotent=True)
        health = await c.head("health")
        other = await c.get("orders")
    assert [got.status, created.status, health.status, other.status] == [200, 201, 204, 404]
    assert [r.url for r in transport.sent("POST users/{id}")] == ["http://svc/users/2"] * 2
    assert len(transport.sent("users/{id}")) == 3


async def test_a_request_no_script_covers_fails_loudly() -> None:
    """Without default steps, an unscripted request raises LookupError naming it."""
    transport = ScriptedTransport(routes={"users/{id}": [OK]})
    with pytest.raises(LookupError, match=r"no script for GET orders/\{n\}"):
        await transport.send(ac.get("orders/{n}", path_params={"n": 3}))


async def test_records_what_the_client_sent() -> None:
    """The recorded request is what went on the wire: absolute URL and propagation headers."""
    transport = ScriptedTransport(OK)
    async with ac.Client(transport, "http://svc") as client:
        await client.get("users/{id}", path_params={"id": 7}, timeout=1.5, priority="high")
    (sent,) = transport.requests
    assert sent.url == "http://svc/users/7"
    assert sent.route == "users/{id}"
    assert sent.headers["X-Request-Timeout"] == "1.500"
    assert sent.headers["X-Request-Priority"] == "high"
    assert sent.headers["X-Request-Attempt"] == "1"


async def test_an_error_step_raises_a_fresh_copy_each_time() -> None:
    """An exception step raises a new instance each play, with the original's attributes."""
    refusal = ac.CircuitOpenError("open", retry_after=3.0)
    transport = ScriptedTransport(refusal)
    raised = []
    for _ in range(2):
        with pytest.raises(ac.CircuitOpenError) as info:
            await transport.send(ac.get("x"))
        raised.append(info.value)
    assert raised[0] is not raised[1]
    assert raised[0] is not refusal
    assert [exc.retry_after for exc in raised] == [3.0, 3.0]
    assert raised[1].may_have_reached_server is False


async def test_delayed_steps_wait_on_the_loop_clock() -> None:
    """``Delayed(s, then)`` answers or raises ``then`` after ``s`` seconds of loop time."""
    transport = ScriptedTransport(
        Delayed(2.5, ac.Response(200)), Delayed(1.0, ac.ConnectError("x"))
    )
    start = anyio.current_time()
    assert (await transport.send(ac.get("x"))).status == 200
    assert anyio.current_time() - start == pytest.approx(2.5)
    with pytest.raises(ac.ConnectError):
        await transport.send(ac.get("x"))
    assert anyio.current_time() - start == pytest.approx(3.5)


async def test_a_stalled_step_ends_at_the_deadline() -> None:
    """``Delayed(math.inf)`` never answers: the call ends with its deadline, in virtual time."""
    transport = ScriptedTransport(Delayed(math.inf))
    started, wall = anyio.current_time(), time.monotonic()
    async with ac.Client(transport, "http://svc") as client:
        with pytest.raises(ac.DeadlineExceededError):
            await client.get("x", timeout=5.0)
    assert anyio.current_time() - started == pytest.approx(5.0, abs=0.01)
    assert time.monotonic() - wall < 1.0


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: ScriptedTransport(), "needs steps or routes"),
        (lambda: ScriptedTransport(200), r"steps must hold"),  # type: ignore[arg-type]
        (lambda: ScriptedTransport(routes={"x": ["ok"]}), r"routes\['x'\]"),  # type: ignore[list-item]
        (lambda: Delayed(-1.0), r"seconds=\) must be >= 0"),
        (lambda: Delayed(math.nan), r"seconds=\) must be >= 0"),
        (lambda: Delayed(1.0, 200), r"then=\) must be"),  # type: ignore[arg-type]
    ],
)
def test_bad_scripts_are_config_errors(make: object, match: str) -> None:
    """A script that cannot play is refused at construction with a ConfigError naming it."""
    assert callable(make)
    with pytest.raises(ac.ConfigError, match=match):
        make()


# -- VirtualTimeLoop -----------------------------------------------------------------------


def test_virtual_time_skips_waits_nothing_but_a_timer_can_end() -> None:
    """An hour of sleeping takes no real time, and the loop clock says an hour passed."""

    async def main() -> float:
        start = anyio.current_time()
        await anyio.sleep(3600)
        return anyio.current_time() - start

    wall = time.monotonic()
    slept = anyio.run(main, backend_options={"loop_factory": VirtualTimeLoop})
    assert slept == pytest.approx(3600.0)
    assert time.monotonic() - wall < 1.0


def test_virtual_time_waits_for_real_while_a_socket_is_open() -> None:
    """With a server socket open the loop waits in real time, so real I/O keeps working."""

    async def main() -> tuple[bytes, float]:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readline()
            writer.write(b"pong\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            start = anyio.current_time()
            await anyio.sleep(0.05)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"ping\n")
            line = await reader.readline()
            writer.close()
            await writer.wait_closed()
            return line, anyio.current_time() - start

    wall = time.monotonic()
    line, elapsed = anyio.run(main, backend_options={"loop_factory": VirtualTimeLoop})
    assert line == b"pong\n"
    assert elapsed >= 0.05
    assert time.monotonic() - wall >= 0.05


def test_virtual_time_waits_for_real_while_an_executor_thread_runs() -> None:
    """A function run in the loop's executor is waited for in real time: a pending 10 s
    timeout does not fire while it works."""

    async def main() -> float:
        start = anyio.current_time()
        with anyio.fail_after(10):
            await asyncio.to_thread(time.sleep, 0.05)
        return anyio.current_time() - start

    wall = time.monotonic()
    elapsed = anyio.run(main, backend_options={"loop_factory": VirtualTimeLoop})
    assert time.monotonic() - wall >= 0.05
    # The clock followed the real wait (not the work around it) and never jumped to 10 s.
    assert 0 < elapsed < 10


def test_virtual_time_starts_where_asked() -> None:
    """``VirtualTimeLoop(start)`` starts its clock at ``start``."""
    loop = VirtualTimeLoop(1000.0)
    try:
        assert loop.time() == 1000.0
    finally:
        loop.close()


# -- ChaosTransport ------------------------------------------------------------------------


async def _outcomes(chaos: ChaosTransport, calls: int) -> list[str]:
    outcomes = []
    async with ac.Client(chaos, "http://svc", strategy=ac.single_attempt_strategy()) as client:
        for _ in range(calls):
            try:
                outcomes.append(str((await client.get("x", timeout=1.0)).status))
            except ac.AioClientError as exc:
                outcomes.append(type(exc).__name__)
    return outcomes


async def test_chaos_is_repeatable_with_a_seed() -> None:
    """The same seed gives the same faults in the same order; another seed does not."""

    def chaos(seed: int) -> ChaosTransport:
        return ChaosTransport(
            ScriptedTransport(OK),
            seed=seed,
            error_rate=0.2,
            reset_rate=0.1,
            stall_rate=0.05,
            slow_rate=0.2,
        )

    first = await _outcomes(chaos(3), 100)
    again = await _outcomes(chaos(3), 100)
    other = await _outcomes(chaos(4), 100)
    assert first == again
    assert first != other


async def test_chaos_injects_each_fault_at_about_its_rate() -> None:
    """Over 2,000 calls each fault shows up near its probability, as the error it stands for."""
    inner = ScriptedTransport(OK)
    chaos = ChaosTransport(
        inner, seed=1, error_rate=0.2, reset_rate=0.1, stall_rate=0.05, slow_rate=0.1
    )
    outcomes = Counter(await _outcomes(chaos, 2000))
    assert 340 <= outcomes["503"] <= 460
    assert 150 <= outcomes["NetworkError"] <= 250
    assert 60 <= outcomes["DeadlineExceededError"] <= 140
    assert (
        outcomes["200"]
        == 2000 - outcomes["503"] - outcomes["NetworkError"] - (outcomes["DeadlineExceededError"])
    )
    assert chaos.injected["error"] == outcomes["503"]
    assert chaos.injected["reset"] == outcomes["NetworkError"]
    assert 150 <= chaos.injected["slow"] <= 250
    # A reset is lost on the way back: the inner transport served it.
    assert len(inner.requests) == outcomes["200"] + outcomes["NetworkError"]


async def test_a_reset_may_have_reached_the_server() -> None:
    """A reset raises NetworkError saying the request may have reached the server."""
    chaos = ChaosTransport(ScriptedTransport(OK), reset_rate=1.0)
    with pytest.raises(ac.NetworkError) as info:
        await chaos.send(ac.get("x"))
    assert info.value.may_have_reached_server is True


async def test_slow_tails_wait_between_the_bounds() -> None:
    """A slow exchange waits ``slow_min``..``slow_max`` seconds before it goes on."""
    chaos = ChaosTransport(ScriptedTransport(OK), seed=2, slow_rate=1.0, slow_min=0.2, slow_max=0.4)
    for _ in range(20):
        start = anyio.current_time()
        assert (await chaos.send(ac.get("x"))).status == 200
        assert 0.2 <= anyio.current_time() - start <= 0.4 + 1e-9
    assert chaos.injected == Counter({"slow": 20})


async def test_retries_ride_out_chaos() -> None:
    """Retries turn a 20% fault rate per attempt into (nearly) all calls succeeding."""
    chaos = ChaosTransport(ScriptedTransport(OK), seed=5, error_rate=0.1, reset_rate=0.1)
    succeeded = 0
    async with ac.Client(chaos, "http://svc", strategy=ac.sequential_strategy(3, NO_DELAY)) as c:
        for _ in range(200):
            try:
                succeeded += (await c.get("x")).status == 200
            except ac.NetworkError:
                pass
    assert succeeded >= 190
    assert chaos.injected["error"] + chaos.injected["reset"] >= 30


async def test_closing_chaos_closes_the_inner_transport() -> None:
    """``aclose()`` closes the wrapped transport."""
    closed: list[bool] = []

    class Inner:
        async def send(self, request: ac.Request, /) -> ac.Response:
            return OK

        async def aclose(self) -> None:
            closed.append(True)

    await ChaosTransport(Inner()).aclose()
    assert closed == [True]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"error_rate": 1.5}, "error_rate= must be from 0 to 1"),
        ({"slow_rate": -0.1}, "slow_rate= must be from 0 to 1"),
        ({"error_rate": 0.6, "stall_rate": 0.6}, "must be at most 1"),
        ({"error_status": 404}, "error_status= must be a 5xx"),
        ({"slow_min": 0.5, "slow_max": 0.1}, "slow_min <= slow_max"),
        ({"slow_max": math.inf}, "slow_min <= slow_max"),
    ],
)
def test_bad_chaos_settings_are_config_errors(options: dict[str, float], match: str) -> None:
    """Out-of-range chaos settings fail at construction, naming the parameter."""
    with pytest.raises(ac.ConfigError, match=match):
        ChaosTransport(ScriptedTransport(OK), **options)  # type: ignore[arg-type]
