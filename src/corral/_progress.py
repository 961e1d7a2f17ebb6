"""A small text progress bar for corral's command-line tools (private).

::

    with ProgressBar(40, label="train") as bar:
        for _ in range(40):
            ...
            bar.update(loss=0.1234)

On a terminal (``stream.isatty()``) it redraws one line with ``\\r``::

    train [#########.....................] 12/40 30% 3.2/s eta 9s  loss=0.1234

at most every ``min_interval`` seconds of ``clock`` (the empty bar is drawn at
construction, and ``close`` always draws the final state and ends the line). Anywhere else
(a log file, CI) it prints a whole line only when the count crosses a 10% step (one line
however many steps one update crosses; the 100% line is left to ``close``), or with
``total=None`` at most every ``min_interval``, and the final line on ``close``: a run of any
length writes at most 10 lines.

With ``total=None`` there is no bar, percentage or eta: ``label 12 3.2/s 4s  loss=0.1234``
(the count, the rate, the elapsed time). The final line shows the elapsed time in place of
the eta: ``... 40/40 100% 3.2/s in 12s``. Fields (``loss=0.1234``) are sticky: an update or
``set_fields`` replaces the named ones and keeps the others, in first-seen order; floats are
shown with 4 significant digits, everything else with ``str``.

Writing never raises: a stream that is closed or fails (``ValueError``, ``OSError``) is
abandoned silently, so a progress bar cannot fail the work it reports on. Not thread-safe:
call it from one thread.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

__all__ = ["ProgressBar", "format_duration", "format_value"]


def format_value(value: object) -> str:
    """A field's text: floats with 4 significant digits (``0.1234``, ``1235``, ``1e-05``),
    anything else with ``str``."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_duration(seconds: float) -> str:
    """``9s``, ``2m05s``, ``1h02m`` (rounded to the displayed unit)."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _format_rate(rate: float) -> str:
    return f"{rate:.1f}" if rate < 100 else f"{rate:.0f}"


def _is_tty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class ProgressBar:
    """A progress bar over ``total`` steps (``None``: unknown) written to ``stream``
    (default ``sys.stderr``); see the module doc. ``width`` is the bar's characters,
    ``min_interval`` the least seconds of ``clock`` between redraws."""

    def __init__(
        self,
        total: int | None,
        *,
        label: str,
        stream: TextIO | None = None,
        width: int = 30,
        min_interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if total is not None and (type(total) is not int or total < 0):
            raise ValueError(f"ProgressBar: total must be an int >= 0 or None; got {total!r}")
        if type(width) is not int or width < 1:
            raise ValueError(f"ProgressBar: width must be an int >= 1; got {width!r}")
        if not isinstance(min_interval, int | float) or not min_interval >= 0:
            raise ValueError(
                f"ProgressBar: min_interval must be a number >= 0; got {min_interval!r}"
            )
        self.total = total
        self.label = label
        self.count = 0
        self.fields: dict[str, object] = {}
        self._stream = sys.stderr if stream is None else stream
        self._width = width
        self._min_interval = float(min_interval)
        self._clock = clock
        self._start = clock()
        self._tty = _is_tty(self._stream)
        self._last_draw: float | None = None
        self._last_len = 0
        self._step = 0  # the last 10% step printed (not a TTY)
        self._closed = False
        self._broken = False
        if self._tty:
            self._draw(self._start)

    # -- the API ---------------------------------------------------------------------------

    def update(self, n: int = 1, **fields: object) -> None:
        """Advance by ``n`` (an int >= 0) and set ``fields``; redraws as the module doc says."""
        if type(n) is not int or n < 0:
            raise ValueError(f"ProgressBar.update: n must be an int >= 0; got {n!r}")
        if self._closed:
            return
        self.count += n
        self.fields.update(fields)
        now = self._clock()
        if self._tty or self.total is None:
            if self._due(now):
                self._draw(now)
            return
        step = self._ten_percent_steps()
        if step > self._step and self.count < self.total:
            self._step = step
            self._draw(now)

    def set_fields(self, **fields: object) -> None:
        """Set ``fields`` without advancing; a TTY redraws if ``min_interval`` has passed."""
        if self._closed:
            return
        self.fields.update(fields)
        now = self._clock()
        if self._tty and self._due(now):
            self._draw(now)

    def close(self) -> None:
        """Draw the final state and end the line; later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        self._draw(self._clock(), final=True)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- rendering -------------------------------------------------------------------------

    def render(self, now: float, *, final: bool = False) -> str:
        """The line for the state at time ``now`` (no ``\\r``, no newline)."""
        elapsed = now - self._start
        rate = self.count / elapsed if elapsed > 0 else None
        parts = [self.label]
        if self.total is None:
            parts.append(str(self.count))
        else:
            fraction = 1.0 if self.total == 0 else min(1.0, self.count / self.total)
            filled = math.floor(fraction * self._width)
            parts.append("[" + "#" * filled + "." * (self._width - filled) + "]")
            parts.append(f"{self.count}/{self.total}")
            parts.append(f"{math.floor(fraction * 100)}%")
        if rate is not None and self.count > 0:
            parts.append(f"{_format_rate(rate)}/s")
        if final:
            parts.append(f"in {format_duration(elapsed)}")
        elif self.total is None:
            parts.append(format_duration(elapsed))
        elif rate and self.count < self.total:
            parts.append(f"eta {format_duration((self.total - self.count) / rate)}")
        line = " ".join(parts)
        if self.fields:
            line += "  " + " ".join(f"{k}={format_value(v)}" for k, v in self.fields.items())
        return line

    def _due(self, now: float) -> bool:
        return self._last_draw is None or now - self._last_draw >= self._min_interval

    def _ten_percent_steps(self) -> int:
        assert self.total is not None
        if self.total == 0:
            return 10
        return min(10, self.count * 10 // self.total)

    def _draw(self, now: float, *, final: bool = False) -> None:
        self._last_draw = now
        line = self.render(now, final=final)
        if self._tty:
            text = "\r" + line + " " * max(0, self._last_len - len(line))
            self._last_len = len(line)
            self._write(text + ("\n" if final else ""))
        else:
            self._write(line + "\n")

    def _write(self, text: str) -> None:
        if self._broken:
            return
        try:
            self._stream.write(text)
            self._stream.flush()
        except (ValueError, OSError):
            self._broken = True
