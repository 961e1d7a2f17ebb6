"""Ports: processes whose body is a worker OS process.

A port is an ``Actor``; its worker is the OS process that runs the handler, reached through
a ``WorkerProcess`` (``corral.port.worker_process``) that the port owns.

``Port("mymodel:Model", args={...})`` is an ``Actor``: spawn it, supervise it, link to it,
call it. Its ``init`` starts ``python -m corral.port mymodel:Model``, sends ``INIT`` with
``args`` and waits for ``READY`` (setup included). Then ``await pid.call(msg)`` sends
``msg`` to the worker's ``handle_call`` and returns its reply; many calls may be in flight,
matched by id, answered in any order; ``pid.cast(msg)`` goes to ``handle_cast``.

When the worker ends for any reason — exit, ``os._exit``, SIGKILL, segfault, OOM kill, or
corral stopping it because it broke the protocol — every pending call fails at once with
``PortExited`` (exit status or signal, and the last lines of the worker's stderr), and the
port process exits with that error as its reason, so links, monitors and its supervisor
hear about it. When the port process ends for any reason, its worker is stopped (``STOP``,
then SIGKILL after ``stop_timeout``). The worker's stderr goes to the ``corral.port``
logger, a line at a time, with the port's name.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.errors import PortExited
from corral.port.options import PortOptions
from corral.port.spares import spare_wanted, take_spare
from corral.port.worker_process import WorkerProcess
from corral.runtime.messages import ExitReason
from corral.runtime.process import Actor, Pid

__all__ = ["Port", "PortOptions"]


class Port(Actor):
    """A process whose body is a worker OS process running ``handler``.

    Options are ``PortOptions`` fields, as keywords. Calls wait as any call (5 s by
    default: pass ``timeout=`` to ``pid.call`` for slow models). A call beyond
    ``max_in_flight`` fails with ``Overloaded``; a message that cannot be encoded fails the
    call with ``TypeError``; neither harms the port.
    """

    def __init__(self, handler: str, **options: object) -> None:
        self.options = PortOptions.from_kwargs({"handler": handler, **options})
        self._worker: WorkerProcess | None = None

    @property
    def os_pid(self) -> int | None:
        """The worker's OS process id (None before it started)."""
        return None if self._worker is None else self._worker.os_pid

    @staticmethod
    def os_pid_of(pid: Pid) -> int | None:
        """The worker OS process id of the port running as ``pid``: None before its worker
        started or after the port ended. ``TypeError`` if ``pid`` is not a port's. For tools
        and tests that signal the worker (``os.kill(Port.os_pid_of(pid), SIGKILL)``)."""
        port = Port.running_as(pid)
        if port is not None:
            return port.os_pid
        if pid.alive:
            raise TypeError(f"Port.os_pid_of: {pid} is not a port; it runs {pid.actor_type}")
        return None

    def _label(self) -> str:
        return f"{self.pid} {self.options.handler}"

    async def init(self) -> None:
        node = self.node
        spare = None
        if self.options.spares:
            spare = await take_spare(node, self.options, user=self.pid)
        if spare is not None:
            spare.adopt(self._label(), self._worker_down)
            worker = spare
        else:
            worker = WorkerProcess(self.options, self._label(), self._worker_down)
        self._worker = worker
        # Whatever ends this process (kill included), the worker goes too, and the node
        # waits for it to be reaped before it finishes stopping.
        self.pid.add_exit_callback(lambda _reason: node.add_cleanup(worker.reap()))
        if spare is not None:
            return
        try:
            await worker.start()
        except BaseException:
            await worker.reap()
            raise
        if self.options.spares:
            spare_wanted(node, self.options)  # its spares start now that it is up

    def _worker_down(self, down: PortExited) -> None:
        self.pid.send_system(_WorkerDown(down))

    def handle_call(self, msg: object) -> object:
        assert self._worker is not None
        self._worker.call(msg, self.defer_reply())
        return None

    def handle_cast(self, msg: object) -> None:
        assert self._worker is not None
        self._worker.cast(msg)

    def handle_info(self, msg: object) -> None:
        if isinstance(msg, _WorkerDown):
            raise msg.error
        super().handle_info(msg)

    async def terminate(self, reason: ExitReason) -> None:
        if self._worker is not None:
            await self._worker.stop(self.options.stop_timeout)


@dataclass(frozen=True)
class _WorkerDown:
    error: PortExited
