"""``PortOptions``: how a port starts and talks to its worker.

One schema that validates and documents every option of ``Port(handler, **options)``;
``PortOptions.describe()`` prints them. The worker process (``corral.port.worker_process``)
and the spare pool (``corral.port.spares``) read the same record.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from corral._options import Options, is_int, is_number, option
from corral.port.frames import DEFAULT_MAX_FRAME_SIZE

__all__ = ["PortOptions"]

_HAS_MEMFD: Final = hasattr(os, "memfd_create")


def _is_handler_spec(value: object) -> bool:
    if type(value) is not str:
        return False
    module, sep, attr = value.partition(":")
    return bool(sep and module and attr)


@dataclass(frozen=True, kw_only=True)
class PortOptions(Options):
    """How a port starts and talks to its worker."""

    _what = "port"

    handler: str = option(
        "",
        doc="The worker's handler, 'module:Handler' (a class or zero-argument factory).",
        rule="a str like 'module:Handler'",
        check=_is_handler_spec,
    )
    args: Mapping[str, object] | None = option(
        None,
        doc="Keyword arguments for the handler's setup(); sent once, msgpack-encoded.",
        rule="a mapping with str keys or None",
        check=lambda v: v is None or (isinstance(v, Mapping) and all(type(k) is str for k in v)),
    )
    command: tuple[str, ...] | None = option(
        None,
        doc="Run this argv instead of `python -m corral.port HANDLER`; it must speak the "
        "corral port protocol.",
        rule="a tuple of str or None",
        check=lambda v: (
            v is None or (type(v) is tuple and len(v) > 0 and all(type(a) is str for a in v))
        ),
    )
    python: str = option(
        sys.executable,
        doc="The interpreter that runs the worker.",
        shown="sys.executable",
        rule="a non-empty str",
        check=lambda v: type(v) is str and v != "",
    )
    env: Mapping[str, str] | None = option(
        None,
        doc="Extra environment variables for the worker (added to the parent's).",
        rule="a mapping of str to str or None",
        check=lambda v: (
            v is None
            or (
                isinstance(v, Mapping)
                and all(type(k) is str and type(x) is str for k, x in v.items())
            )
        ),
    )
    cwd: str | None = option(
        None,
        doc="The worker's working directory.",
        rule="a str or None",
        check=lambda v: v is None or type(v) is str,
    )
    max_frame_size: int = option(
        DEFAULT_MAX_FRAME_SIZE,
        doc="Largest frame either side accepts, in bytes.",
        rule="an int >= 1024",
        check=is_int(1024),
    )
    shm_threshold: int | None = option(
        1 << 20,
        doc="Arrays of this many bytes or more travel through shared memory; None: never.",
        rule="an int >= 0 or None",
        check=lambda v: v is None or (type(v) is int and v >= 0),
    )
    max_in_flight: int = option(
        1024,
        doc="Calls that may wait for the worker at once; more fail with Overloaded.",
        rule="an int >= 1",
        check=is_int(1),
    )
    start_timeout: float = option(
        60.0,
        doc="Seconds the worker gets to start and run setup().",
        rule="a number > 0",
        check=is_number(0, strict=True),
    )
    stop_timeout: float = option(
        5.0,
        doc="Seconds the worker gets to stop after STOP before it is killed.",
        rule="a number >= 0",
        check=is_number(0),
    )
    spin: float = option(
        0.0002,
        doc="Seconds the worker polls for the next request before it blocks: saves two "
        "context switches per round trip for chatty callers, costs up to this much CPU "
        "after each burst. 0 disables.",
        rule="a number >= 0",
        check=is_number(0),
    )
    spares: int = option(
        1,
        doc="Ready workers the node keeps for these options so a restart adopts one "
        "instead of starting an interpreter and running setup (see corral.port.spares). "
        "Each costs an idle worker's memory.",
        rule="an int >= 0",
        check=is_int(0),
    )
    crash_on_error: bool = option(
        False,
        doc="If the handler raises, the worker exits (status 1) instead of replying with "
        "the error: 'let it crash' for handlers whose state an error may corrupt.",
        rule="a bool",
        check=lambda v: type(v) is bool,
    )

    def argv(self, shm_fd: int | None = None) -> list[str]:
        """The worker's command line; ``shm_fd``: its end of the shared-memory socket."""
        if self.command is not None:
            return list(self.command)
        argv = [self.python, "-m", "corral.port", self.handler]
        argv += ["--max-frame-size", str(self.max_frame_size), "--spin", repr(self.spin)]
        if self.crash_on_error:
            argv.append("--crash-on-error")
        if shm_fd is not None and self.shm_threshold is not None:
            argv += ["--shm-fd", str(shm_fd), "--shm-threshold", str(self.shm_threshold)]
        return argv

    @property
    def uses_shm(self) -> bool:
        """Whether large arrays go through shared memory: ``shm_threshold`` is set, the
        worker is corral's own (no ``command``) and the platform has memfd (Linux)."""
        return self.shm_threshold is not None and self.command is None and _HAS_MEMFD
