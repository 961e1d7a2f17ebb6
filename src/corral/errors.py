"""Every error corral raises on purpose.

Runtime conditions are classes with attributes, so code can react to them; misuse of an
API (a wrong type, an option out of range) raises the built-in ``TypeError`` or
``ValueError`` instead. Messages follow one shape: ``<where> <who>: <rule>; got <value>``,
then what to do when there is a usual cause.

The tree::

    CorralError
    ├── ProcessError                  a process could not do what was asked
    │   ├── NoProcess                 the process is dead, or no process has that name
    │   ├── ProcessExited             the process exited while a call to it was pending
    │   ├── CallTimeout               no reply within the call's timeout (also a TimeoutError)
    │   └── AlreadyRegistered         the name is taken by a live process
    ├── Overloaded                    a bounded buffer is full; retry later or shed load
    │   ├── MailboxFull               a process's mailbox holds mailbox_size messages
    │   └── ServingOverloaded         a serving's queue holds max_queue requests
    ├── StartError                    a process's init hook failed; the process never ran
    ├── PortError                     a port's OS process or its wire failed
    │   ├── PortExited                the worker process ended (exit status or signal)
    │   ├── PortCallError             the worker's handler raised; carries the remote traceback
    │   └── ProtocolError             a frame or term could not be decoded, or broke the protocol
    │       ├── FrameTooLarge         a frame is larger than max_frame_size
    │       └── EtfError              bytes that are not a valid Erlang term (corral.port.etf)
    ├── ServingError                  a serving could not run a request
    │   ├── DeadlineExceeded          the request's deadline passed before it was answered
    │   ├── InvalidInput              the request breaks the serving's input contract (a ValueError)
    │   ├── ServingNotRunning         the serving is not started, or has stopped
    │   │   └── ServingRestarting     the serving crashed and did not come back in time
    │   ├── PartitionCrashed          the partition running the batch died, retries used up
    │   └── SwapFailed                a new model version failed to load or warm up; rolled back
    ├── SupervisorError
    │   ├── RestartIntensityExceeded  more than max_restarts restarts within max_seconds
    │   ├── UnknownChild              no child with that id under the supervisor
    │   ├── ChildAlreadyStarted       start_child: a running child has that id (a ValueError)
    │   ├── ChildAlreadyPresent       start_child: a stopped child has that id (a ValueError)
    │   ├── ChildRunning              restart_child, delete_child: that child runs (a ValueError)
    │   └── ChildNotRestarted         wait_restarted: the child ended and will not be restarted
    ├── TrainingFailed                a training run stopped: a worker kept dying, a model raised
    ├── ActorLost                     a Ray actor corral watched died, or its node is gone
    ├── ActorCallError                a Ray actor's model raised; carries the remote traceback
    └── NodeError                     the node is not running, or already running
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corral.runtime.messages import ExitReason
    from corral.runtime.process import Pid

__all__ = [
    "ActorCallError",
    "ActorLost",
    "AlreadyRegistered",
    "CallTimeout",
    "ChildAlreadyPresent",
    "ChildAlreadyStarted",
    "ChildNotRestarted",
    "ChildRunning",
    "CorralError",
    "DeadlineExceeded",
    "FrameTooLarge",
    "InvalidInput",
    "MailboxFull",
    "NoProcess",
    "NodeError",
    "Overloaded",
    "PartitionCrashed",
    "PortCallError",
    "PortError",
    "PortExited",
    "ProcessError",
    "ProcessExited",
    "ProtocolError",
    "RestartIntensityExceeded",
    "ServingError",
    "ServingNotRunning",
    "ServingOverloaded",
    "ServingRestarting",
    "StartError",
    "SupervisorError",
    "SwapFailed",
    "TrainingFailed",
    "UnknownChild",
]


def describe_reason(reason: ExitReason) -> str:
    """Render an exit reason for a message: ``normal`` or ``ValueError('boom')``."""
    if isinstance(reason, BaseException):
        return repr(reason)
    return reason


class CorralError(Exception):
    """Base class of every error corral raises on purpose."""


class ProcessError(CorralError):
    """A process could not do what was asked of it."""

    def __init__(self, message: str, pid: Pid | None) -> None:
        super().__init__(message)
        self.pid = pid


class NoProcess(ProcessError):
    """The target process is dead, or no live process is registered under the name.

    ``pid`` is the dead process (``None`` when a name was not found); ``name`` is the name
    looked up, if any.
    """

    def __init__(self, pid: Pid | None, *, name: str | None = None, action: str = "call") -> None:
        self.name = name
        if pid is None:
            message = f"{action} to process '{name}': no process is registered under that name"
        else:
            message = (
                f"{action} to process {pid}: the process is not alive "
                f"(exited with {describe_reason(pid.exit_reason or 'noproc')})"
            )
        super().__init__(message, pid)


class ProcessExited(ProcessError):
    """The process exited before it replied to a pending call.

    ``reason`` is its exit reason (``"normal"``, ``"shutdown"``, ``"killed"`` or the exception
    that ended it); the exception is also the ``__cause__`` when there is one.
    """

    def __init__(self, pid: Pid, reason: ExitReason) -> None:
        self.reason = reason
        super().__init__(
            f"call to process {pid}: the process exited with {describe_reason(reason)} "
            "before it replied",
            pid,
        )
        if isinstance(reason, BaseException):
            self.__cause__ = reason


class CallTimeout(ProcessError, TimeoutError):
    """No reply came within the call's timeout.

    The request is dropped if the process had not picked it up yet; if it had, its reply
    is discarded when it comes.
    """

    def __init__(self, pid: Pid, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(
            f"call to process {pid}: no reply within {timeout:g} s (timeout={timeout:g}); "
            "the process is busy or stuck, or the timeout is too short for the work",
            pid,
        )


class AlreadyRegistered(ProcessError):
    """The name is registered to another live process."""

    def __init__(self, name: str, pid: Pid) -> None:
        self.name = name
        super().__init__(
            f"register name '{name}': the name is taken by live process {pid}; "
            "names are freed when their process exits",
            pid,
        )


class Overloaded(CorralError):
    """A bounded buffer is full. Fail fast, retry later or shed load; never grow memory."""


class MailboxFull(Overloaded):
    """The process's mailbox already holds ``capacity`` messages."""

    def __init__(self, pid: Pid, capacity: int) -> None:
        self.pid = pid
        self.capacity = capacity
        super().__init__(
            f"send to process {pid}: the mailbox is full ({capacity} messages queued, "
            f"mailbox_size={capacity}); the process is slower than its senders"
        )


class StartError(CorralError):
    """A process's ``init`` hook raised or the process was killed before init finished.

    ``reason`` is the exception (also the ``__cause__``) or the exit reason.
    """

    def __init__(self, who: str, reason: ExitReason) -> None:
        self.who = who
        self.reason = reason
        if isinstance(reason, StartError):
            # A supervisor whose child failed: chain the texts instead of nesting reprs.
            super().__init__(f"start {who}: init failed because {reason}")
        else:
            super().__init__(f"start {who}: init failed with {describe_reason(reason)}")
        if isinstance(reason, BaseException):
            self.__cause__ = reason


class SupervisorError(CorralError):
    """A supervisor could not do what was asked, or gave up."""


class RestartIntensityExceeded(SupervisorError):
    """A supervisor restarted children more than ``max_restarts`` times in ``max_seconds``.

    The supervisor stops all its children and exits with this error as its reason; its own
    supervisor then decides what to do. ``child_id`` and ``reason`` describe the last exit.
    """

    def __init__(
        self,
        supervisor: str,
        max_restarts: int,
        max_seconds: float,
        child_id: str,
        reason: ExitReason,
    ) -> None:
        self.supervisor = supervisor
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self.child_id = child_id
        self.reason = reason
        super().__init__(
            f"supervisor {supervisor}: more than {max_restarts} restarts within "
            f"{max_seconds:g} s (max_restarts={max_restarts}, max_seconds={max_seconds:g}); "
            f"last exit: child '{child_id}' with {describe_reason(reason)}"
        )


class UnknownChild(SupervisorError, LookupError):
    """No child with that id is known to the supervisor."""

    def __init__(self, supervisor: str, child_id: str) -> None:
        self.supervisor = supervisor
        self.child_id = child_id
        super().__init__(f"supervisor {supervisor}: no child with id '{child_id}'")


class ChildAlreadyStarted(SupervisorError, ValueError):
    """``start_child`` was given an id that a running child has (OTP's ``already_started``).

    ``pid`` is that child's process. A ``ValueError`` too, as before these classes existed.
    """

    def __init__(self, supervisor: str, child_id: str, pid: Pid) -> None:
        self.supervisor = supervisor
        self.child_id = child_id
        self.pid = pid
        super().__init__(
            f"supervisor {supervisor}: a child with id '{child_id}' already exists; "
            f"it is running as {pid}"
        )


class ChildAlreadyPresent(SupervisorError, ValueError):
    """``start_child`` was given an id that a stopped child has (OTP's ``already_present``).

    ``restart_child`` starts that child again; ``delete_child`` forgets it. A ``ValueError``
    too, as before these classes existed.
    """

    def __init__(self, supervisor: str, child_id: str) -> None:
        self.supervisor = supervisor
        self.child_id = child_id
        super().__init__(
            f"supervisor {supervisor}: a child with id '{child_id}' already exists, stopped; "
            "restart_child starts it, delete_child removes it"
        )


class ChildRunning(SupervisorError, ValueError):
    """``restart_child`` or ``delete_child`` was asked for a child that is running (OTP's
    ``running``); ``pid`` is its process. A ``ValueError`` too, as before these classes existed.
    """

    def __init__(self, supervisor: str, child_id: str, pid: Pid, *, hint: str = "") -> None:
        self.supervisor = supervisor
        self.child_id = child_id
        self.pid = pid
        super().__init__(f"supervisor {supervisor}: child '{child_id}' is running{hint}")


class ChildNotRestarted(SupervisorError):
    """``Supervisor.wait_restarted``: the child is stopped and its supervisor will not
    start it again (its restart type said so, or it was terminated or removed)."""

    def __init__(self, supervisor: str, child_id: str) -> None:
        self.supervisor = supervisor
        self.child_id = child_id
        super().__init__(
            f"supervisor {supervisor}: child '{child_id}' is stopped and will not be restarted"
        )


class NodeError(CorralError):
    """The node is not running (or is already running) for the operation asked."""


class PortError(CorralError):
    """A port's OS process, or the wire to it, failed."""


class PortExited(PortError):
    """The worker OS process ended.

    ``status`` is its exit status (``None`` if it was killed by a signal), ``signal`` the
    signal number that killed it (``None`` otherwise), ``detail`` what else is known (the
    last lines it wrote to stderr, or the protocol breach that made corral stop it).
    """

    def __init__(
        self,
        port: str,
        *,
        status: int | None = None,
        signal: int | None = None,
        detail: str = "",
    ) -> None:
        self.port = port
        self.status = status
        self.signal = signal
        self.detail = detail
        if signal is not None:
            import signal as signals

            try:
                how = f"was killed by {signals.Signals(signal).name}"
            except ValueError:
                how = f"was killed by signal {signal}"
        elif status is not None:
            how = f"exited with status {status}"
        else:
            how = "exited"
        message = f"port {port}: the worker process {how}"
        if detail:
            message += f"; {detail}"
        super().__init__(message)


class PortCallError(PortError):
    """The worker's handler raised; the worker itself goes on.

    ``remote_type`` is the exception's qualified class name in the worker, ``remote_message``
    its text and ``remote_traceback`` the formatted traceback from the worker.
    """

    def __init__(
        self, port: str, remote_type: str, remote_message: str, remote_traceback: str = ""
    ) -> None:
        self.port = port
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        super().__init__(f"port {port}: the handler raised {remote_type}: {remote_message}")


class ProtocolError(PortError, ValueError):
    """Bytes on a port's wire broke the protocol: a corrupt or oversized frame, a term that
    cannot be decoded, an unknown message type."""


class FrameTooLarge(ProtocolError):
    """A frame's length prefix exceeds ``max_frame_size`` bytes."""

    def __init__(self, where: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"{where}: frame of {size} bytes exceeds max_frame_size={limit}; "
            "send large arrays through shared memory or raise max_frame_size"
        )


class ServingOverloaded(Overloaded):
    """A serving's queue already holds ``max_queue`` requests; the request was refused at once.

    Shed load or retry later (HTTP 429/503); the queue never grows past the limit.
    """

    def __init__(self, serving: str, queued: int, max_queue: int) -> None:
        self.serving = serving
        self.queued = queued
        self.max_queue = max_queue
        super().__init__(
            f"serving '{serving}' is overloaded: {queued} requests queued (max_queue={max_queue})"
        )


class ServingError(CorralError):
    """A serving could not run a request."""


class DeadlineExceeded(ServingError, TimeoutError):
    """The request's deadline passed before it was answered.

    ``deadline`` is the budget the caller gave, in seconds; ``waited`` how long it waited;
    ``ran`` whether its batch had started (its result, if any, is dropped) or it was dropped
    unrun from the queue; ``early`` whether it was dropped at its batch's cut, before its
    deadline, because the batch could not have finished in time.
    """

    def __init__(
        self,
        serving: str,
        deadline: float,
        waited: float,
        *,
        ran: bool = False,
        early: bool = False,
    ) -> None:
        self.serving = serving
        self.deadline = deadline
        self.waited = waited
        self.ran = ran
        self.early = early
        if ran:
            what = f"request's deadline passed after {waited:g} s while its batch ran"
        elif early:
            what = (
                f"request dropped unrun after {waited:g} s in the queue: its batch would have "
                "ended after its deadline"
            )
        else:
            what = f"request dropped unrun after {waited:g} s in the queue"
        super().__init__(
            f"serving '{serving}': {what} (deadline={deadline:g}); the serving is slower than "
            "the load, or the deadline is shorter than batch_timeout plus the model's compute "
            "time"
        )


class InvalidInput(ServingError, ValueError):
    """The request does not conform to the serving's input contract; it failed alone, at
    once, and never entered a batch.

    ``expected`` and ``got`` describe the contract and the request (shape, dtype or type).
    """

    def __init__(self, serving: str, expected: str, got: str, *, field: str = "input") -> None:
        self.serving = serving
        self.expected = expected
        self.got = got
        super().__init__(f"serving '{serving}': {field} must be {expected}; got {got}")


class ServingNotRunning(ServingError):
    """The serving has not been started, or its process is not alive (stopped, restarting)."""

    def __init__(self, serving: str, detail: str = "") -> None:
        self.serving = serving
        message = f"serving '{serving}' is not running"
        super().__init__(message + (f"; {detail}" if detail else ""))


class ServingRestarting(ServingNotRunning):
    """The serving's process crashed and its supervisor is restarting it; the request waited
    ``waited`` seconds (its deadline, or ``restart_wait``) and the serving was not back."""

    def __init__(self, serving: str, waited: float, reason: str) -> None:
        self.waited = waited
        self.reason = reason
        super().__init__(
            serving,
            f"it is restarting after a crash ({reason}) and was not back within {waited:g} s; "
            "retry later",
        )


class PartitionCrashed(ServingError):
    """The partition running the request's batch died and no retry was left.

    ``reason`` is the partition's exit reason (also the ``__cause__`` when an exception).
    """

    def __init__(self, serving: str, partition: str, attempts: int, reason: object) -> None:
        self.serving = serving
        self.partition = partition
        self.attempts = attempts
        self.reason = reason
        super().__init__(
            f"serving '{serving}': partition {partition} died while running the batch "
            f"({attempts} attempts, retry_on_crash={attempts - 1}); last reason: {reason!r}"
        )
        if isinstance(reason, BaseException):
            self.__cause__ = reason


class SwapFailed(ServingError):
    """A new model version failed to start or to warm up; the old version keeps serving.

    ``version`` is the version that was refused; the error that refused it is the
    ``__cause__``.
    """

    def __init__(self, serving: str, version: str, reason: BaseException) -> None:
        self.serving = serving
        self.version = version
        super().__init__(
            f"serving '{serving}': swap to version '{version}' failed and was rolled back: "
            f"{reason!r}"
        )
        self.__cause__ = reason


class TrainingFailed(CorralError):
    """A training run stopped before its last round (``corral.train.Trainer.fit``).

    ``round`` is the round that failed (0-based), ``worker`` the worker's index (``None``
    when the failure is not one worker's), ``reason`` what happened: the supervisor's
    ``RestartIntensityExceeded`` when a worker kept dying, the model's ``PortCallError``,
    or a ``CallTimeout``. The reason is also the ``__cause__`` when it is an exception.
    """

    def __init__(self, trainer: str, round: int, worker: int | None, reason: object) -> None:
        self.trainer = trainer
        self.round = round
        self.worker = worker
        self.reason = reason
        who = "" if worker is None else f", worker {worker}"
        what = repr(reason) if isinstance(reason, BaseException) else str(reason)
        super().__init__(f"trainer {trainer}: round {round}{who} failed: {what}")
        if isinstance(reason, BaseException):
            self.__cause__ = reason


class ActorLost(CorralError):
    """A Ray actor that a corral stand-in process owned is gone (``corral.cluster``): its
    process died (Ray's ``ActorDiedError``: a kill, an OOM, its constructor raised) or its
    node is gone or unreachable (``ActorUnavailableError``). The stand-in exits with this
    reason and its supervisor restarts it, which creates a fresh actor.

    ``actor`` names the actor, ``cause`` is Ray's reason in one line, and ``error`` Ray's
    exception (also the ``__cause__``), or None.
    """

    def __init__(self, actor: str, cause: str, error: BaseException | None) -> None:
        self.actor = actor
        self.cause = cause
        self.error = error
        super().__init__(f"{actor}: lost ({cause}); its supervisor decides what follows")
        if error is not None:
            self.__cause__ = error


class ActorCallError(CorralError):
    """The model in a Ray actor raised on a call (``kind="ray"`` partitions); the actor goes
    on. ``remote_type`` is the exception's qualified class name in the actor,
    ``remote_message`` its text and ``remote_traceback`` the formatted traceback there."""

    def __init__(
        self, actor: str, remote_type: str, remote_message: str, remote_traceback: str = ""
    ) -> None:
        self.actor = actor
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        super().__init__(f"Ray actor {actor}: the model raised {remote_type}: {remote_message}")
