"""Every script in examples/ runs and prints what its docstring promises."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXPECTED = {
    "gateway.py": "statuses: 200 504 502 503",
    "quickstart.py": "status 200 from attempt 2",
    "hedging.py": "slowest of 20 calls",
    "metrics_service.py": "scraped /metrics over HTTP",
}


def test_every_example_is_covered() -> None:
    """Each example file has an expectation here, so none goes untested."""
    assert {p.name for p in EXAMPLES.glob("*.py")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str) -> None:
    """The example exits 0, prints its result, and writes nothing to stderr."""
    out = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert EXPECTED[name] in out.stdout
    assert out.stderr == ""


def test_demo_command_runs(tmp_path: Path) -> None:
    """`python -m aio_client demo` runs all five phases with measured numbers and a report."""
    report = tmp_path / "demo.html"
    out = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-m",
            "aio_client",
            "demo",
            "--duration",
            "6",
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    for title in ("1. strategies", "2. upstream outage", "3. deadline propagation", "4. overload"):
        assert title in out.stdout
    assert "5. fan-out: 100 calls, one budget" in out.stdout
    assert "fan_out, hedged, 250 ms budget" in out.stdout
    for name in ("single attempt", "sequential retries", "hedged, adaptive p90"):
        assert name in out.stdout
    assert "extra load = upstream requests beyond one per call" in out.stdout
    # Progress lines name each step once ("phase 2/5 outage: before").
    assert "phase 2/5 outage: before" in out.stdout
    assert "outage: outage: " not in out.stdout
    # The deadline phase: the upstream's 2 s of work was cut by the caller's 300 ms budget.
    # The upstream's work stopped with the budget: its own deadline fired, or the middle
    # service's (which may come first by the transit time) closed the connection.
    deadline_rows = [line.split() for line in out.stdout.splitlines() if line.startswith("  1  ")]
    assert deadline_rows
    worked, stopped_by = deadline_rows[0][4:6]  # "upstream worked ms", "upstream stopped by"
    assert stopped_by in ("deadline", "client_disconnected")
    assert float(worked) < 400
    page = report.read_text()
    assert page.startswith("<!doctype html>")
    assert "<svg" in page
    assert "p99.9</text>" in page
    assert "overload" in page


def test_demo_serves_metrics_while_running() -> None:
    """--serve-metrics exposes the middle service's Prometheus metrics during the run."""
    proc = subprocess.Popen(
        [sys.executable, "-W", "error", "-m", "aio_client", "demo", "--duration", "4",
         "--serve-metrics", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = ""
        for line in proc.stdout:
            if line.startswith("Prometheus metrics: "):
                url = line.split(": ", 1)[1].strip()
                break
        assert url.startswith("http://127.0.0.1:")
        time.sleep(1.5)  # let phase 1 make some calls
        with urllib.request.urlopen(url, timeout=10) as page:
            text = page.read().decode()
        assert "aio_client_requests_total{" in text
        assert "aio_client_server_requests_total{" in text
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "4. overload" in out


def test_demo_stops_cleanly_on_ctrl_c() -> None:
    """SIGINT mid-run stops the demo at once: exit 130, no traceback, no leftovers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "aio_client", "demo", "--duration", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "phase 1/" in line:
                break
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    assert time.monotonic() - started < 5
    assert "Traceback" not in err
    assert "interrupted" in err


def test_demo_rejects_bad_arguments() -> None:
    """Bad demo arguments exit with a usage error, not a traceback."""
    out = subprocess.run(
        [sys.executable, "-m", "aio_client", "demo", "--duration", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "--duration must be" in out.stderr
    assert "Traceback" not in out.stderr
