"""Every script in examples/ runs and prints what its docstring promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXPECTED = {
    "quickstart.py": "status 200 from attempt 2",
    "hedging.py": "slowest of 20 calls",
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


def test_demo_command_runs() -> None:
    """`python -m aio_client demo` compares the strategies with measured numbers."""
    out = subprocess.run(
        [sys.executable, "-W", "error", "-m", "aio_client", "demo", "--calls", "60"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    for name in ("single attempt", "sequential (3)", "hedged, adaptive p90"):
        assert name in out.stdout
    assert "p99 ms" in out.stdout


def test_demo_rejects_bad_arguments() -> None:
    """Bad demo arguments exit with a usage error, not a traceback."""
    out = subprocess.run(
        [sys.executable, "-m", "aio_client", "demo", "--calls", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "must be >= 1" in out.stderr
    assert "Traceback" not in out.stderr
