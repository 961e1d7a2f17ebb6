"""The ``corral`` command line.

``corral demo`` runs the real-time recommender (see ``corral.demos.recommender``);
``corral supervision`` the supervision-tree demo (``corral.demos.supervision``);
``corral train`` trains a model with averaged data-parallel workers (``corral.train.cli``);
``corral serve`` serves models over HTTP (``corral.gateway.cli``; its options are generated
from the options schemas, so its parser is built only when ``serve`` runs);
``corral version`` prints the version.

``corral --help`` and ``corral version`` load neither numpy nor asyncio nor any optional
engine: each command imports what it runs when it runs (tests/test_packaging.py checks).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from corral import logs

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from corral.train.cli import add_parser as add_train_parser

    parser = argparse.ArgumentParser(
        prog="corral",
        description="corral: supervised processes, ports, pipelines and batched inference.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser(
        "demo",
        help="train, serve and replay a MovieLens recommender end to end",
        description=(
            "Train matrix factorization on the first 80% of MovieLens 100K (by time) with "
            "averaged worker processes, serve it on port partitions, replay the remaining "
            "ratings through a pipeline as a live stream, and compare the recommendations "
            "with a popularity baseline."
        ),
    )
    demo.add_argument("--quick", action="store_true", help="replay 3,000 events (~20 s)")
    demo.add_argument("--events", type=int, help="replay only the first N stream ratings")
    demo.add_argument("--chaos", action="store_true", help="SIGKILL a model worker regularly")
    demo.add_argument(
        "--chaos-interval", type=float, default=2.0, help="seconds between kills (default 2)"
    )
    demo.add_argument(
        "--swap", action="store_true", help="retrain on newer data mid-stream and hot-swap"
    )
    demo.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="events/s the source offers (default 0: as fast as the pipeline takes them)",
    )
    demo.add_argument(
        "--source",
        default="memory",
        help="'memory' (default), redis://HOST:PORT/DB or kafka://HOST:PORT: the demo "
        "publishes the events to a new stream or topic there and the pipeline reads them back "
        "through a consumer group",
    )
    demo.add_argument("--workers", type=int, default=4, help="training workers (default 4)")
    demo.add_argument("--rounds", type=int, help="training rounds (default 8)")
    demo.add_argument("--partitions", type=int, default=2, help="port partitions (default 2)")
    demo.add_argument("--processors", type=int, default=2, help="pipeline processors (default 2)")
    demo.add_argument("--batchers", type=int, default=4, help="batch processors (default 4)")
    demo.add_argument("--window", type=int, default=256, help="events in flight (default 256)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    logs.add_arguments(demo, level="warning")
    tree = commands.add_parser(
        "supervision", help="run a small supervision tree that survives injected crashes"
    )
    tree.add_argument("--events", type=int, help="events to feed (>= 30; default 60)")
    tree.add_argument(
        "--tick",
        type=float,
        help="seconds between events (default 0.05; 0 runs as fast as possible)",
    )
    tree.add_argument(
        "--quick",
        action="store_true",
        help="a short storm: 30 events as fast as possible (--events 30 --tick 0; < 1 s)",
    )
    add_train_parser(commands)
    commands.add_parser(
        "serve",
        help="serve models over HTTP, Open Inference Protocol (corral serve --help)",
        add_help=False,
    )
    commands.add_parser("version", help="print corral's version")
    return parser


def _demo(args: argparse.Namespace) -> int:
    import asyncio

    from corral.demos.recommender import DemoOptions, render, run_recommender_demo
    from corral.runtime.loops import default_loop_factory

    logs.configure(args.log_level, args.log_format)
    events = args.events if args.events is not None else (3000 if args.quick else None)
    rounds = args.rounds if args.rounds is not None else 8
    options = DemoOptions(
        events=events,
        workers=args.workers,
        rounds=rounds,
        partitions=args.partitions,
        processors=args.processors,
        batchers=args.batchers,
        window=args.window,
        chaos=args.chaos,
        chaos_interval=args.chaos_interval,
        swap=args.swap,
        rate=args.rate,
        source=args.source,
        seed=args.seed,
    )
    try:
        options.check()
    except ValueError as exc:
        print(f"corral demo: {exc}", file=sys.stderr)
        return 2
    try:
        with asyncio.Runner(loop_factory=default_loop_factory()) as runner:
            result = runner.run(run_recommender_demo(options))
    except (FileNotFoundError, ConnectionError, ImportError) as exc:  # what the user can fix
        print(f"corral demo: {exc}", file=sys.stderr)
        return 1
    print(render(result, options))
    return 0 if result.lost == 0 else 1


def _supervision(args: argparse.Namespace) -> int:
    import asyncio

    from corral.demos.supervision import run_demo
    from corral.runtime.loops import default_loop_factory

    # --quick sets the defaults; --events and --tick given with it still win.
    events = args.events if args.events is not None else (30 if args.quick else 60)
    tick = args.tick if args.tick is not None else (0.0 if args.quick else 0.05)
    if events < 30:
        print(f"corral supervision: --events must be >= 30; got {events}", file=sys.stderr)
        return 2
    if tick < 0:
        print(f"corral supervision: --tick must be >= 0; got {tick}", file=sys.stderr)
        return 2
    with asyncio.Runner(loop_factory=default_loop_factory()) as runner:
        result = runner.run(run_demo(events=events, tick=tick))
    return 0 if result.lost == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``corral`` script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        from corral.gateway.cli import main as serve

        return serve(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "version":
        from corral import __version__

        print(__version__)
        return 0
    if args.command == "train":
        from corral.train.cli import run as run_train

        return run_train(args)
    if args.command == "supervision":
        return _supervision(args)
    return _demo(args)


if __name__ == "__main__":
    sys.exit(main())
