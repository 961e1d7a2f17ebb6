"""Rate limiting, retries with backoff and the dead-letter sink."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline_helpers import Recorder, memory, now, running

from corral.pipeline import BatchInfo, Message
from corral.pipeline.producers.memory import MemoryQueue
from corral.pipeline.testing import push


async def test_rate_limiting_lets_allowed_messages_through_per_interval() -> None:
    pipeline = Recorder(
        name="p",
        producer={"module": "memory", "concurrency": 2},
        processors={"default": {"concurrency": 2}},
        rate_limiting={"allowed_messages": 10, "interval": 1.0},
    )
    async with running(pipeline):
        await push(pipeline, range(25)).wait_acked()
    times = [t for t, _ in pipeline.handled]
    assert times == [0.0] * 10 + [1.0] * 10 + [2.0] * 5


class Flaky(Recorder):
    """Fails message n on its first n attempts (raising); 99 always fails."""

    def handle_message(self, processor: str, message: Message, context: object) -> Message:
        self.handled.append((now(), (message.data, message.attempt)))
        n = message.data
        assert isinstance(n, int)
        if n == 99 or message.attempt <= n:
            raise RuntimeError(f"{n} failed on attempt {message.attempt}")
        return message


async def test_a_failed_message_is_retried_with_backoff_before_it_fails() -> None:
    dead: list[tuple[float, object, int]] = []

    async def dead_letter(messages: list[Message]) -> None:
        dead.extend((now(), m.data, m.attempt) for m in messages)

    pipeline = Flaky(
        name="p",
        producer=memory(),
        retry={"max_attempts": 3, "backoff": {"initial": 0.5, "multiplier": 2.0, "max": 5.0}},
        dead_letter=dead_letter,
    )
    async with running(pipeline):
        successful, failed = await push(pipeline, [0, 1, 99]).wait_acked()
    assert pipeline.handled == [
        (0.0, (0, 1)),
        (0.0, (1, 1)),
        (0.5, (1, 2)),  # the processor waits out the backoff: per-key order holds
        (0.5, (99, 1)),
        (1.0, (99, 2)),
        (2.0, (99, 3)),
    ]
    assert [(m.data, m.attempt) for m in successful] == [(0, 1), (1, 2)]
    assert [(m.data, m.attempt, str(m.failure.reason)) for m in failed if m.failure] == [
        (99, 3, "99 failed on attempt 3")
    ]
    assert dead == [(2.0, 99, 3)]
    assert pipeline.failed_seen == [[99]]


async def test_a_failure_marked_final_is_not_retried() -> None:
    class Final(Recorder):
        def handle_message(self, processor: str, message: Message, context: object) -> Message:
            self.handled.append((now(), message.attempt))
            return message.mark_failed("unparseable", retry=False)

    pipeline = Final(name="p", producer=memory(), retry={"max_attempts": 5})
    async with running(pipeline):
        _, failed = await push(pipeline, ["x"]).wait_acked()
    assert pipeline.handled == [(0.0, 1)]
    assert [m.attempt for m in failed] == [1]


async def test_failed_batch_messages_are_retried_as_a_batch_then_dead_lettered() -> None:
    class FlakyBatch(Recorder):
        def handle_batch(
            self, batcher: str, messages: list[Message], info: BatchInfo, context: object
        ) -> Sequence[Message]:
            self.batches.append((now(), info, [(m.data, m.attempt) for m in messages]))
            return [m.mark_failed("odd") if m.data % 2 else m for m in messages]  # type: ignore[operator]

    dlq = MemoryQueue(name="dlq")
    pipeline = FlakyBatch(
        name="p",
        producer=memory(),
        batchers={"default": {"batch_size": 4}},
        retry={"max_attempts": 2, "backoff": {"initial": 0.25}},
        dead_letter=dlq,
    )
    async with running(pipeline):
        successful, failed = await push(pipeline, range(4)).wait_acked()
    assert [(t, b.trigger, b.size, data) for t, b, data in pipeline.batches] == [
        (0.0, "size", 4, [(0, 1), (1, 1), (2, 1), (3, 1)]),
        (0.25, "retry", 2, [(1, 2), (3, 2)]),
    ]
    assert [m.data for m in successful] == [0, 2]
    assert [(m.data, m.attempt) for m in failed] == [(1, 2), (3, 2)]
    letters = dlq._take(10)
    assert [(m.data, dict(m.metadata)) for m in letters] == [
        (1, {"dead_letter_reason": "odd", "attempts": 2}),
        (3, {"dead_letter_reason": "odd", "attempts": 2}),
    ]
    assert all(m.ok for m in letters)


async def test_a_raising_dead_letter_sink_is_logged_and_the_messages_still_fail() -> None:
    def broken(messages: list[Message]) -> None:
        raise OSError("dlq down")

    pipeline = Flaky(name="p", producer=memory(), dead_letter=broken)
    async with running(pipeline):
        successful, failed = await push(pipeline, [0, 99]).wait_acked()
    assert ([m.data for m in successful], [m.data for m in failed]) == ([0], [99])
