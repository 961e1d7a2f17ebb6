"""corral: Erlang/OTP-style processes, supervisors, ports, pipelines and batched inference
for Python machine-learning services. This module only re-exports."""

import logging as _logging

from corral.errors import (
    AlreadyRegistered,
    CallTimeout,
    CorralError,
    MailboxFull,
    NodeError,
    NoProcess,
    Overloaded,
    ProcessError,
    ProcessExited,
    RestartIntensityExceeded,
    StartError,
    SupervisorError,
    UnknownChild,
)
from corral.runtime import (
    KILL,
    KILLED,
    NOPROC,
    NORMAL,
    SHUTDOWN,
    Actor,
    Caller,
    ChildInfo,
    ChildSpec,
    Clock,
    CrashReport,
    Down,
    Exit,
    ExitReason,
    MonitorRef,
    Node,
    Pid,
    Supervisor,
    SupervisorOptions,
    Timer,
    get_node,
    self_pid,
)

__version__ = "0.1.0"

# A library adds no handlers of its own: crash reports reach whatever logging the
# application configures, and nothing is printed when it configures none.
_logging.getLogger("corral").addHandler(_logging.NullHandler())

__all__ = [
    "KILL",
    "KILLED",
    "NOPROC",
    "NORMAL",
    "SHUTDOWN",
    "Actor",
    "AlreadyRegistered",
    "CallTimeout",
    "Caller",
    "ChildInfo",
    "ChildSpec",
    "Clock",
    "CorralError",
    "CrashReport",
    "Down",
    "Exit",
    "ExitReason",
    "MailboxFull",
    "MonitorRef",
    "NoProcess",
    "Node",
    "NodeError",
    "Overloaded",
    "Pid",
    "ProcessError",
    "ProcessExited",
    "RestartIntensityExceeded",
    "StartError",
    "Supervisor",
    "SupervisorError",
    "SupervisorOptions",
    "Timer",
    "UnknownChild",
    "__version__",
    "get_node",
    "self_pid",
]
