"""Helpers shared by corral's benchmarks: event-loop choice, interleaved repeats, statistics
and the one-JSON-object-per-line output.

Every benchmark compares corral with a baseline measured in the same run, on the same loop,
and reports the ratio (DESIGN.md: "every claim about speed lives in benchmarks/ as a ratio
against the ceiling measured in the same run"). Each output line has this shape::

    {"bench": ..., "case": ..., "metric": ..., "value": ..., "unit": ...,
     "baseline": {"name": ..., "value": ...}, "ratio": ..., "loop": ...}

plus optional extra keys (``lower_is_better``). Progress and per-repeat detail go to stderr,
so stdout stays machine-readable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "LOOPS",
    "Settings",
    "Stopwatch",
    "Timing",
    "default_loop",
    "emit",
    "interleaved",
    "local_server",
    "loop_factory",
    "median",
    "parse_settings",
    "percentile",
    "say",
]

_T = TypeVar("_T")

LOOPS = ("uvloop", "asyncio")


def _uvloop_installed() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def default_loop() -> str:
    """``"uvloop"`` when uvloop is installed, else ``"asyncio"``."""
    return "uvloop" if _uvloop_installed() else "asyncio"


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event-loop factory for ``name`` (one of ``LOOPS``)."""
    if name == "asyncio":
        return asyncio.new_event_loop
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    raise ValueError(f"benchmark --loop: must be one of {', '.join(LOOPS)}; got {name!r}")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Command-line settings common to every benchmark."""

    quick: bool
    loop: str
    repeats: int
    verbose: bool


def parse_settings(description: str, argv: Sequence[str] | None = None) -> Settings:
    """Parse ``[--quick] [--loop uvloop|asyncio] [--verbose]``.

    ``repeats`` is 3 with ``--quick``, else 5.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="fewer operations and repeats (3 instead of 5)"
    )
    parser.add_argument(
        "--loop",
        choices=LOOPS,
        default=default_loop(),
        help="event loop to run on (default: uvloop if installed, else asyncio)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="print every repeat's numbers to stderr"
    )
    args = parser.parse_args(argv)
    if args.loop == "uvloop" and not _uvloop_installed():
        parser.error("--loop uvloop: uvloop is not installed (pip install 'corral[fast]')")
    return Settings(
        quick=args.quick, loop=args.loop, repeats=3 if args.quick else 5, verbose=args.verbose
    )


class Stopwatch:
    """Measures one interval both in wall-clock time and in this thread's CPU time.

    The CPU time tells how much of the wall-clock time the benchmark actually ran: on a
    shared machine the OS may deschedule the event loop's thread, and wall-clock numbers then
    measure the neighbours. Every runtime benchmark is one thread that never waits for I/O,
    so on an idle machine the two agree. ``start`` reads the CPU clock (a system call, ~0.7
    us) before the wall clock and ``stop`` after it, so the wall-clock interval excludes those
    reads.
    """

    __slots__ = ("_cpu0", "_wall0", "cpu", "wall")

    def __init__(self) -> None:
        self._cpu0 = self._wall0 = 0.0
        self.cpu = self.wall = 0.0

    def start(self) -> None:
        self._cpu0 = time.thread_time()
        self._wall0 = time.perf_counter()

    def stop(self) -> None:
        wall1 = time.perf_counter()
        cpu1 = time.thread_time()
        self.wall = wall1 - self._wall0
        self.cpu = cpu1 - self._cpu0


@dataclass(frozen=True)
class Timing:
    """``ops`` operations took ``wall`` seconds of wall-clock and ``cpu`` of CPU time."""

    ops: int
    wall: float
    cpu: float

    @classmethod
    def of(cls, ops: int, watch: Stopwatch) -> Timing:
        return cls(ops, watch.wall, watch.cpu)

    @property
    def rate(self) -> float:
        """Operations per wall-clock second."""
        return self.ops / self.wall

    @property
    def cpu_rate(self) -> float:
        """Operations per CPU second: the rate had the thread never been descheduled."""
        return self.ops / self.cpu if self.cpu > 0 else math.inf

    @property
    def cpu_share(self) -> float:
        """The fraction of the wall-clock time the thread was on a CPU."""
        return self.cpu / self.wall


def say(message: str) -> None:
    """A progress or detail line on stderr."""
    print(message, file=sys.stderr, flush=True)


async def interleaved(sides: Sequence[Callable[[], Awaitable[_T]]], repeats: int) -> list[list[_T]]:
    """Run every side ``repeats`` times, interleaved, and return each side's results.

    Repeat ``r`` runs all sides once, in an order rotated by ``r`` (A B, then B A, ...), so
    that drift on a noisy shared machine (another job starting, the CPU clocking down) hits
    every side alike instead of whichever ran last. A full garbage collection runs before
    each measurement so that no side pays for another's garbage.
    """
    results: list[list[_T]] = [[] for _ in sides]
    n = len(sides)
    for r in range(repeats):
        for k in range(n):
            index = (r + k) % n
            gc.collect()
            results[index].append(await sides[index]())
    return results


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (the mean of the middle two for an even count)."""
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``values``: the smallest value
    that at least ``q`` percent of the values do not exceed."""
    if not values:
        raise ValueError("percentile: values must not be empty")
    if not 0 < q <= 100:
        raise ValueError(f"percentile: q must be in (0, 100]; got {q}")
    ordered = sorted(values)
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[rank - 1]


def _round(value: float) -> float:
    """Four significant digits: more would only print the machine's noise."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, 3 - math.floor(math.log10(abs(value))))


def _round_all(item: object) -> object:
    if type(item) is float:
        return _round(item)
    if isinstance(item, dict):
        return {key: _round_all(value) for key, value in item.items()}
    return item


def emit(
    *,
    bench: str,
    case: str,
    metric: str,
    value: float,
    unit: str,
    baseline_name: str,
    baseline_value: float,
    loop: str,
    ratio: float | None = None,
    **extra: object,
) -> None:
    """Print one result line as JSON on stdout.

    ``ratio`` defaults to ``value / baseline_value``. ``extra`` keys (for example
    ``lower_is_better=True``) are appended after the standard ones. Floats, also inside
    ``extra``'s dicts, are rounded to four significant digits.
    """
    if ratio is None:
        ratio = value / baseline_value
    line: dict[str, object] = {
        "bench": bench,
        "case": case,
        "metric": metric,
        "value": _round(value),
        "unit": unit,
        "baseline": {"name": baseline_name, "value": _round(baseline_value)},
        "ratio": _round(ratio),
        "loop": loop,
    }
    line.update({key: _round_all(item) for key, item in extra.items()})
    print(json.dumps(line), flush=True)


@contextlib.contextmanager
def local_server(
    what: str, argv: Callable[[int, str], list[str]], *, timeout: float = 10.0
) -> Iterator[int]:
    """Run a server (a broker the benchmark starts) on a free loopback port; yields the port.

    ``argv(port, directory)`` is its command line, given a fresh temporary directory that is
    also its working directory. ``RuntimeError`` naming ``what`` if it exits or does not
    accept connections within ``timeout`` seconds. Terminated (and waited for) at the end.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as directory:
        server = subprocess.Popen(
            argv(port, directory),
            cwd=directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"{what} did not start") from None
                    time.sleep(0.01)  # waiting for the server process to listen
            yield port
        finally:
            server.terminate()
            server.wait()
