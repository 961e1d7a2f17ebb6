"""``Serving``: an inert value (a model factory and options) that runs inline or as a process.

- ``serving.run_inline(x)`` loads the model once and runs it on the calling thread: no
  batching, no process; for scripts and tests.
- ``serving.child_spec()`` puts it in a supervision tree (or ``await serving.start(node)``);
  then ``await serving.run(x)`` from any task on the node's loop, and
  ``serving.run_sync(x)`` from any other thread.
"""

from __future__ import annotations

import asyncio

from corral.runtime.node import Node
from corral.runtime.process import Pid
from corral.runtime.supervisor import ChildSpec, Supervisor
from corral.serving.adapters import AsyncFunctionModel, Model
from corral.serving.adapters.base import as_output
from corral.serving.contract import conform
from corral.serving.door import Door, RunningServer
from corral.serving.factory import ModelFactory, check_factory, factory_spec, load_model
from corral.serving.fields import Sequences, first_array, split, stack
from corral.serving.options import ServingOptions
from corral.serving.records import Result, ServingStatistics

__all__ = ["Serving"]


class Serving:
    """Batched inference for one model.

    ``factory`` loads the model (a zero-argument callable, or ``"module:attr"``; required
    for ``kind="port"``); what it returns is adapted by ``corral.serving.adapters.adapt``.
    ``options`` are ``ServingOptions`` fields (``batch_size``, ``batch_timeout``,
    ``max_queue``, ``partitions``, ``kind``, ``batch_keys``, ``pad_to``, ``retry_on_crash``,
    ``input_spec``, ``isolate_errors``, ...), validated here: a bad value raises
    ``ValueError`` naming the option; so does a ``"module:attr"`` factory of the wrong form.
    """

    def __init__(self, factory: ModelFactory, *, name: str = "serving", **options: object) -> None:
        if type(name) is not str or not name:
            raise ValueError(f"Serving: name must be a non-empty str; got {name!r}")
        self.name = name
        self.factory = factory
        self.options = ServingOptions.from_kwargs(options, what=f"serving '{name}'")
        check_factory(factory, where=f"serving '{name}'")
        if self.options.kind in ("port", "ray"):
            factory_spec(factory)  # a port worker imports it: refuse lambdas now
        self._door = Door(name)
        self._inline: Model | None = None

    def __repr__(self) -> str:
        state = "running" if self._door.running else "not running"
        return f"<Serving '{self.name}' {self.options.kind} x{self.options.partitions} {state}>"

    # -- inline ------------------------------------------------------------------------------

    def run_inline(self, x: object) -> Result:
        """Run one sample through the model on the calling thread, unbatched (loading the
        model on first use): ``preprocess``, the input contract, sequence padding to its
        bucket, the model, then ``postprocess``, as ``run`` would. Blocks for the load and
        the compute."""
        return self._run_inline(x, True)

    def run_batch_inline(self, xs: object) -> Result:
        """As ``run_inline`` for a batch (first axis) of samples."""
        return self._run_inline(xs, False)

    def _run_inline(self, x: object, single: bool) -> Result:
        options = self.options
        if options.preprocess is not None:
            x = options.preprocess(x)
        value = conform(self.name, x, options.input_spec, single=single)
        size = 1 if single else int(first_array(value).shape[0])
        sequences = lengths = None
        target = 0
        if options.sequence_buckets:
            sequences = Sequences(
                options.sequence_buckets, options.sequence_pad, unpad=options.sequence_unpad
            )
            length = sequences.length(self.name, value, single)
            target = sequences.bucket(self.name, length)[1]
            lengths = [length]
        batch = stack([value], [size], [single], size, sequences, target)
        output = as_output(self._inline_model().run(batch))
        out = split(output, [size], [single], lengths, target, sequences)
        mine = out[0]
        if options.postprocess is not None:
            mine = options.postprocess(mine)
        return Result(mine, options.version)  # type: ignore[arg-type]

    def _inline_model(self) -> Model:
        if self._inline is None:
            model = load_model(self.factory, device=self.options.device)
            if isinstance(model, AsyncFunctionModel):
                raise TypeError(f"serving '{self.name}': an async model cannot run inline")
            self._inline = model
        return self._inline

    # -- as a process ------------------------------------------------------------------------

    def child_spec(self, *, id: str | None = None) -> ChildSpec:
        """A child spec for a supervisor: the serving process registered as ``name``; it
        starts its partitions (each loading the model) before the next child starts."""
        from corral.serving.server import ServingServer

        def start() -> ServingServer:
            return ServingServer(self.name, self.options, self.factory, self._door)

        return ChildSpec(id=id or self.name, start=start, name=self.name, shutdown=30.0)

    async def start(self, node: Node) -> Pid:
        """Start the serving under ``node``'s root supervisor; returns when every partition
        has loaded its model. Raises ``StartError`` if one fails to."""
        return await Supervisor.start_child(node.root, self.child_spec())

    def _server(self) -> RunningServer:
        """The running server (for calls that must not wait); ``ServingNotRunning`` if none."""
        server = self._door.current
        if server is None:
            raise self._door.not_running()
        return server

    # -- callers -----------------------------------------------------------------------------

    async def run(self, x: object, *, deadline: float | None = None) -> Result:
        """Run one sample, batched with other callers'; returns its output and version.

        ``x`` must meet the input contract (``input_spec``; without one, any bool, int or
        float array, or a dict or tuple of them): otherwise ``InvalidInput`` at once. With a
        ``preprocess`` hook, ``x`` is what the hook takes (text for a tokenizer), and the
        hook runs here, in the caller's task; ``postprocess`` runs here on the output.
        ``deadline``: seconds from now; a request not answered by then fails with
        ``DeadlineExceeded`` (dropped unrun if its batch has not started). Raises
        ``ServingOverloaded`` at once when the queue is full. While the serving restarts
        after a crash, waits for it (at most the deadline or ``restart_wait``; then
        ``ServingRestarting``). Cancelling the caller takes the request out of the queue (or
        drops its result if its batch is running). Must be
        called on the node's loop.
        """
        return await self._submit(x, True, deadline)

    async def run_batch(self, xs: object, *, deadline: float | None = None) -> Result:
        """As ``run`` for a small batch of samples (first axis; 1 to ``batch_size``); they
        stay together in one batch and the output keeps the first axis."""
        return await self._submit(xs, False, deadline)

    async def _submit(self, x: object, single: bool, deadline: float | None) -> Result:
        # One coroutine per request (the hooks inline, not another await layer): this is the
        # hot path of every caller.
        options = self.options
        if options.preprocess is not None and options.preprocess_in == "caller":
            x = options.preprocess(x)
        if deadline is not None:
            _check_deadline(self.name, deadline)
        server = self._door.current
        if server is None:
            loop = asyncio.get_running_loop()
            began = loop.time()
            server = await self._door.wait(deadline, options.restart_wait)
            if deadline is not None:
                deadline = max(0.0, deadline - (loop.time() - began))
        request, fut = server.submit(x, single, deadline)
        try:
            result = await fut
        except asyncio.CancelledError:
            server.withdraw(request)
            raise
        if options.postprocess is None:
            return result
        return Result(options.postprocess(result.output), result.version)  # type: ignore[arg-type]

    def run_sync(self, x: object, *, deadline: float | None = None) -> Result:
        """``run`` from a thread that is not the node's loop (a Flask handler, say); blocks
        the calling thread until the result. Thread-safe."""
        return self._sync(self.run(x, deadline=deadline))

    def run_batch_sync(self, xs: object, *, deadline: float | None = None) -> Result:
        """``run_batch`` from another thread; blocks it until the result. Thread-safe."""
        return self._sync(self.run_batch(xs, deadline=deadline))

    def _sync(self, coro: object) -> Result:
        door = self._door
        loop = door.loop
        if loop is None or loop.is_closed() or not (door.running or door.restarting):
            coro.close()  # type: ignore[attr-defined]
            raise door.not_running()
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            coro.close()  # type: ignore[attr-defined]
            raise RuntimeError(
                f"serving '{self.name}': run_sync called on the node's event loop thread, where "
                "it would deadlock; use `await serving.run(x)` there"
            )
        return asyncio.run_coroutine_threadsafe(coro, loop).result()  # type: ignore[arg-type]

    async def swap(self, factory: ModelFactory, *, version: str, warmup: object = None) -> None:
        """Load ``factory`` as ``version`` beside the running model, warm it on ``warmup``
        (one sample), put it in service, let the old version's running batches finish, then
        stop it; how is the ``swap`` option: ``"all_at_once"`` starts and warms every new
        partition at once, then flips new batches to it in one step; ``"rolling"`` (the
        default for port partitions) replaces one partition at a time, so at most one model
        loads at a time and never fewer than ``partitions`` serve. Raises ``SwapFailed``
        (the old version serves alone again, on every partition) if the new one fails to
        load or to warm up. Returns when the old version (and, for ports, its spares) has
        stopped. See docs/serving.md, Hot swap."""
        if type(version) is not str or not version:
            raise ValueError(
                f"serving '{self.name}': version must be a non-empty str; got {version!r}"
            )
        check_factory(factory, where=f"serving '{self.name}' swap")
        if self.options.kind in ("port", "ray"):
            factory_spec(factory)  # refuse what a port worker cannot import, before starting
        server = self._server()
        await server.pid.call(("swap", factory, version, warmup), timeout=None)

    def statistics(self, *, window: float = 10.0) -> ServingStatistics:
        """A snapshot of the queue, batches, timings and partitions, with per-bucket
        throughput, batch sizes and padding in total and over the last ``window`` seconds.
        Call on the node's loop (or while the serving is idle)."""
        if type(window) not in (int, float) or window <= 0:
            raise ValueError(f"serving '{self.name}': window must be seconds > 0; got {window!r}")
        return self._server().statistics(window)

    def partition_pids(self) -> tuple[Pid, ...]:
        """The processes of the current version's partitions, in index order: for tools and
        tests that inject crashes (``pid.exit(KILL)``; a port's worker OS process is
        ``Port.os_pid_of(pid)``). A snapshot: a restarted partition has a new pid."""
        return self._server().partition_pids()

    @property
    def version(self) -> str:
        """The model version new batches run on."""
        server = self._door.current
        return self.options.version if server is None else server.version


def _check_deadline(name: str, deadline: object) -> None:
    if type(deadline) not in (int, float) or deadline < 0:  # type: ignore[operator]
        raise ValueError(
            f"serving '{name}': deadline must be a number of seconds >= 0 or None; got {deadline!r}"
        )
