"""Command line: ``python -m aio_client demo`` (also the ``aio-client`` script)."""

from __future__ import annotations

import argparse
import sys

import anyio

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="aio-client", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="show retries and hedging against a local service")
    demo.add_argument("--calls", type=int, default=400, help="calls per strategy (default 400)")
    demo.add_argument("--concurrency", type=int, default=20, help="calls in flight (default 20)")
    demo.add_argument("--seed", type=int, default=7, help="seed of the upstream's latencies")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.concurrency < 1:
        parser.error("--calls and --concurrency must be >= 1")
    try:
        from ._demo import run_demo
    except ImportError as exc:  # pragma: no cover - depends on the install
        print(f"the demo needs aiohttp: pip install 'aio-client[aiohttp]' ({exc})", file=sys.stderr)
        return 2
    try:
        anyio.run(run_demo, args.calls, args.concurrency, args.seed)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
