"""``Pipeline``: the class a user subclasses to write a Broadway-style pipeline.

::

    class Features(Pipeline):
        def handle_message(self, processor, message, context):
            return message.put_data(featurize(message.data)).put_batcher("ml_processing")

        async def handle_batch(self, batcher, messages, batch_info, context):
            scores = await model.predict([m.data for m in messages])
            return [m.put_data((m.data, s)) for m, s in zip(messages, scores)]

    pipeline = Features(
        name="features",
        producer={"module": "memory", "concurrency": 1},
        processors={"default": {"concurrency": 4}},
        batchers={"ml_processing": {"batch_size": 100, "batch_timeout": 1.0, "concurrency": 2}},
    )
    await pipeline.start(node)      # or put pipeline.child_spec() in a supervisor
    ...
    await pipeline.stop()           # drains: in-flight messages finish and are acknowledged

The options are validated when the pipeline is made (``corral.pipeline.options``); the
producer module is imported then. One instance describes one pipeline: its hooks run in the
stage processes, several at once (one per stage), so they must not keep per-message state on
``self``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Sequence
from typing import Literal

from corral.pipeline.message import BatchInfo, Message
from corral.pipeline.options import PipelineOptions
from corral.pipeline.parsing import parse_pipeline_options
from corral.pipeline.producer import DeadLetterSink
from corral.pipeline.stages.hooks import StageHooks
from corral.pipeline.statistics import PipelineCounters, PipelineStatistics
from corral.runtime import ChildSpec, Node, Pid, Supervisor, get_node

__all__ = ["Pipeline"]

_Hook = Literal["handle_message", "handle_batch", "handle_failed"]


class Pipeline:
    """Base class of pipelines: override the hooks, pass the options to the constructor.

    Every hook may be ``def`` or ``async def``. An exception from ``handle_message`` fails
    that message, one from ``handle_batch`` every message of that batch: never the
    pipeline. ``ValueError`` names the first wrong option (dotted path and valid keys).
    """

    def __init__(self, **options: object) -> None:
        self.options: PipelineOptions = parse_pipeline_options(options)
        self.dead_letter_sink: DeadLetterSink | None = self._resolve_dead_letter()
        self._async_hooks = {
            hook: inspect.iscoroutinefunction(getattr(type(self), hook))
            for hook in ("handle_message", "handle_batch", "handle_failed")
        }
        self._node: Node | None = None
        self._counters = PipelineCounters()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} pipeline '{self.name}'>"

    @property
    def name(self) -> str:
        """The pipeline's name (``options.name``)."""
        return self.options.name

    def hook_is_async(self, hook: _Hook) -> bool:
        """Whether this class's ``hook`` is an ``async def``."""
        return self._async_hooks[hook]

    # -- hooks -----------------------------------------------------------------------------

    def handle_message(
        self, processor: str, message: Message, context: object
    ) -> Message | Awaitable[Message]:
        """Handle one message in processor stage ``processor``'s task; return it, updated
        with the ``Message`` helpers (``mark_failed``, ``put_batcher``...).

        One message at a time per processor stage. Raising fails this message only (and,
        with ``retry``, it is tried again after the backoff). Returning anything but a
        ``Message`` fails it with a ``TypeError``. The default returns it unchanged.
        """
        return message

    def handle_batch(
        self, batcher: str, messages: list[Message], batch_info: BatchInfo, context: object
    ) -> Sequence[Message] | Awaitable[Sequence[Message]]:
        """Handle one batch of batcher ``batcher`` in a batch processor's task; return
        every message, each possibly updated or marked failed.

        The batch's messages are acknowledged when this returns, so the next batch of this
        batch processor waits for it (that is the backpressure). Raising fails the whole
        batch; returning a different number of messages fails it with a ``TypeError``. The
        default returns the messages unchanged.
        """
        return messages

    def handle_failed(
        self, messages: list[Message], context: object
    ) -> Sequence[Message] | Awaitable[Sequence[Message]]:
        """See the messages that finally failed, before the dead-letter sink and the
        acknowledger do; return them (possibly updated, e.g. their metadata).

        Runs in the task of the stage that failed them. If it raises or returns a different
        number of messages, that is logged and the messages go on as they were.
        """
        return messages

    # -- running ---------------------------------------------------------------------------

    def child_spec(self, *, id: str | None = None) -> ChildSpec:
        """A ``ChildSpec`` that runs this pipeline under any supervisor: its process is the
        pipeline supervisor, registered under the pipeline's name. Stopping it drains."""
        from corral.pipeline.stages.tree import PipelineSupervisor

        return ChildSpec(
            id=self.name if id is None else id,
            start=lambda: PipelineSupervisor(self.options, self.stage_hooks()),
            type="supervisor",
            name=self.name,
        )

    async def start(self, node: Node | None = None) -> Pid:
        """Start the pipeline as a child of ``node``'s root supervisor (the running node
        when omitted); waits until every stage has started. Returns the pipeline
        supervisor's pid. Raises ``ValueError`` if a child with the pipeline's name exists.
        """
        node = get_node() if node is None else node
        pid = await node.start_child(self.child_spec())
        self._node = node
        return pid

    async def stop(self) -> None:
        """Stop a pipeline started with ``start``: drain (producers stop pulling, messages
        in flight finish and are acknowledged, within ``shutdown_timeout``), then stop the
        stages. Waits for all of it. No effect if it is not running."""
        node = self._node
        if node is None or not node.running:
            self._node = None
            return
        try:
            await Supervisor.terminate_child(node.root, self.name)
            await Supervisor.delete_child(node.root, self.name)
        finally:
            self._node = None

    def statistics(self) -> PipelineStatistics:
        """A snapshot of the messages this pipeline took in and how they ended, in total
        and per stage, since it was made (restarts and ``start``/``stop`` cycles included).
        Never blocks; call it on the node's loop. See ``corral.pipeline.statistics``."""
        return self._counters.snapshot(self.name)

    def whereis(self, stage: str) -> Pid | None:
        """The live stage process registered as ``<name>.<stage>`` on the node the pipeline
        was started on (``"producer.0"``, ``"batcher.ml_processing"``...), or None."""
        if self._node is None:
            return None
        return self._node.whereis(f"{self.name}.{stage}")

    def stage_hooks(self) -> StageHooks:
        """This pipeline's hooks as its stages call them (they never see the pipeline)."""
        return StageHooks(
            handle_message=self.handle_message,
            handle_message_async=self._async_hooks["handle_message"],
            handle_batch=self.handle_batch,
            handle_batch_async=self._async_hooks["handle_batch"],
            handle_failed=self.handle_failed,
            dead_letter=self.dead_letter_sink,
            context=self.options.context,
            counters=self._counters,
        )

    # -- internals -------------------------------------------------------------------------

    def _resolve_dead_letter(self) -> DeadLetterSink | None:
        target = self.options.dead_letter
        if target is None:
            return None
        if callable(target):
            return target
        producer = self.options.producer
        sink = producer.module.dead_letter_sink(target, producer.options)
        if sink is None:
            raise ValueError(
                "invalid options for pipeline: dead_letter must be a callable or a target "
                f"that producer {producer.module.__name__} supports; got {target!r}"
            )
        return sink
