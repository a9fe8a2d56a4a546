"""Command line: ``python -m aio_client demo`` (also the ``aio-client`` script)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="aio-client", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="strategies, breaker, deadlines and shedding against local services"
    )
    demo.add_argument(
        "--duration", type=float, default=40.0, help="seconds for all phases (default 40)"
    )
    demo.add_argument("--seed", type=int, default=7, help="seed of the upstream's latencies")
    demo.add_argument("--report", type=Path, help="also write a self-contained HTML report here")
    demo.add_argument(
        "--serve-metrics",
        type=int,
        metavar="PORT",
        help="serve Prometheus /metrics on 127.0.0.1:PORT while running (0: any free port)",
    )
    args = parser.parse_args(argv)
    if not 2.0 <= args.duration <= 3600.0:
        parser.error("--duration must be from 2 to 3600 seconds")
    if args.serve_metrics is not None and not 0 <= args.serve_metrics <= 65535:
        parser.error("--serve-metrics must be a port from 0 to 65535")
    try:
        from ._demo import run_demo
    except ImportError as exc:  # pragma: no cover - depends on the install
        print(
            f"the demo needs the [all] extra of aio-client-resilient ({exc}); in a checkout: "
            "pip install -e '.[all]'",
            file=sys.stderr,
        )
        return 2
    try:
        anyio.run(run_demo, args.duration, args.seed, args.report, args.serve_metrics)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
