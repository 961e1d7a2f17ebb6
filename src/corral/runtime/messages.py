"""Exit reasons and the system messages a process can receive in ``handle_info``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from corral.runtime.process import Pid

ExitReason = str | BaseException
"""Why a process ended: ``"normal"``, ``"shutdown"``, ``"killed"``, ``"noproc"``, another
string chosen by the code that stopped it, or the exception that ended it."""

NORMAL: Final = "normal"
"""The process finished its work (``stop()`` with no reason, or its supervisor deleted it)."""
SHUTDOWN: Final = "shutdown"
"""The process was asked to stop by its supervisor or node."""
KILL: Final = "kill"
"""Sent with ``pid.exit(KILL)``: ends the process at once, even if it traps exits."""
KILLED: Final = "killed"
"""The reason of a process that was ended by ``KILL``; it is what its links receive."""
NOPROC: Final = "noproc"
"""The reason in a ``Down`` for a monitor set on a process that was already dead."""


def is_clean_exit(reason: ExitReason) -> bool:
    """Whether ``reason`` is a clean exit (``normal`` or ``shutdown``).

    A ``transient`` child is restarted only after an exit that is not clean; links do not
    propagate ``normal``.
    """
    return type(reason) is str and reason in (NORMAL, SHUTDOWN)


def is_kill(reason: ExitReason) -> bool:
    """Whether ``reason`` is the untrappable ``kill`` signal."""
    return type(reason) is str and reason == KILL


@dataclass(frozen=True, slots=True, eq=False)
class MonitorRef:
    """The handle ``monitor`` returns; the same object comes back in the ``Down`` message."""

    id: int

    def __repr__(self) -> str:
        return f"MonitorRef({self.id})"


@dataclass(frozen=True, slots=True)
class Down:
    """A monitored process ended (``reason``), or was dead already (``"noproc"``)."""

    ref: MonitorRef
    pid: Pid
    reason: ExitReason


@dataclass(frozen=True, slots=True)
class Exit:
    """An exit signal received as a message, because the process traps exits.

    ``pid`` is the process that ended or sent the signal, or ``None`` when it was sent from
    outside any process (a test, the node).
    """

    pid: Pid | None
    reason: ExitReason
