"""The ``corral`` command line.

``corral demo`` runs the supervision demo (see ``corral.demos.supervision``);
``corral version`` prints the version.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corral",
        description="corral: supervised processes, ports, pipelines and batched inference.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser(
        "demo", help="run a small supervision tree that survives injected crashes"
    )
    demo.add_argument("--events", type=int, default=60, help="events to feed (>= 30; default 60)")
    demo.add_argument(
        "--tick",
        type=float,
        default=0.05,
        help="seconds between events (default 0.05; 0 runs as fast as possible)",
    )
    commands.add_parser("version", help="print corral's version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``corral`` script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "version":
        from corral import __version__

        print(__version__)
        return 0
    from corral.demos.supervision import run_demo
    from corral.runtime.loops import default_loop_factory

    if args.events < 30:
        print(f"corral demo: --events must be >= 30; got {args.events}", file=sys.stderr)
        return 2
    if args.tick < 0:
        print(f"corral demo: --tick must be >= 0; got {args.tick}", file=sys.stderr)
        return 2
    with asyncio.Runner(loop_factory=default_loop_factory()) as runner:
        result = runner.run(run_demo(events=args.events, tick=args.tick))
    return 0 if result.lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
