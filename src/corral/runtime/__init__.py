"""corral's process runtime: processes, links, monitors, timers, supervisors and the node.

See ``docs/architecture.md`` for the supervision tree and the shutdown order.
"""

import corral._logging  # noqa: F401  (installs the NullHandler)
from corral.runtime.clock import Clock
from corral.runtime.context import get_node, self_pid
from corral.runtime.messages import (
    KILL,
    KILLED,
    NOPROC,
    NORMAL,
    SHUTDOWN,
    Down,
    Exit,
    ExitReason,
    MonitorRef,
    is_clean_exit,
)
from corral.runtime.node import Node
from corral.runtime.process import (
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_MAILBOX_SIZE,
    Actor,
    Caller,
    Pid,
    Timer,
)
from corral.runtime.restart import RestartIntensity, RestartPlan, plan_restart, should_restart
from corral.runtime.supervisor import (
    ChildInfo,
    ChildSpec,
    CrashReport,
    RestartWindow,
    Supervisor,
    SupervisorOptions,
)

__all__ = [
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_MAILBOX_SIZE",
    "KILL",
    "KILLED",
    "NOPROC",
    "NORMAL",
    "SHUTDOWN",
    "Actor",
    "Caller",
    "ChildInfo",
    "ChildSpec",
    "Clock",
    "CrashReport",
    "Down",
    "Exit",
    "ExitReason",
    "MonitorRef",
    "Node",
    "Pid",
    "RestartIntensity",
    "RestartPlan",
    "RestartWindow",
    "Supervisor",
    "SupervisorOptions",
    "Timer",
    "get_node",
    "is_clean_exit",
    "plan_restart",
    "self_pid",
    "should_restart",
]
