"""Messages and acknowledgements: every message ends acked or failed exactly once, and a
failing handler fails only its own message or batch."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from pipeline_helpers import Recorder, memory, running

from corral.pipeline import BatchInfo, Failure, Message, Pipeline
from corral.pipeline.stages.ending import group_by_acknowledger
from corral.pipeline.testing import Pushed, push


class Ack:
    def __init__(self) -> None:
        self.calls: list[tuple[list[object], list[object]]] = []

    def ack(self, successful: Sequence[Message], failed: Sequence[Message]) -> None:
        self.calls.append(([m.data for m in successful], [m.data for m in failed]))


def test_message_helpers_return_updated_copies() -> None:
    m = Message(1)
    failed = m.put_data(2).put_batcher("b").put_batch_key("k").mark_failed("nope")
    assert m == Message(1)
    assert (failed.data, failed.batcher, failed.batch_key) == (2, "b", "k")
    assert failed.status == Failure("nope") and failed.failure == Failure("nope", retry=True)
    assert not failed.ok and m.ok and m.failure is None
    assert m.update_data(lambda d: d + 1).data == 2  # type: ignore[operator]
    with pytest.raises(AttributeError):
        m.data = 3  # type: ignore[misc]


def test_acks_are_grouped_per_acknowledger_keeping_order() -> None:
    a, b = Ack(), Ack()
    ok = [Message(1, acknowledger=a), Message(2, acknowledger=b), Message(3, acknowledger=a)]
    bad = [Message(4, acknowledger=b)]
    groups = group_by_acknowledger(ok, bad)
    assert [(g[0], [m.data for m in g[1]], [m.data for m in g[2]]) for g in groups] == [
        (a, [1, 3], []),
        (b, [2], [4]),
    ]


class Picky(Pipeline):
    """Fails odd numbers by marking them, raises on multiples of 5, returns junk for 8."""

    def handle_message(self, processor: str, message: Message, context: object) -> Message:
        n = message.data
        assert isinstance(n, int)
        if n % 5 == 0 and n:
            raise ValueError(f"no {n}")
        if n == 8:
            return "junk"  # type: ignore[return-value]
        if n % 2:
            return message.mark_failed(f"odd {n}")
        return message.put_data(n * 10)


async def test_ack_partitions_are_exact_and_a_raising_handler_fails_only_its_message() -> None:
    pipeline = Picky(name="picky", producer=memory())
    async with running(pipeline):
        pushed = push(pipeline, range(11))
        successful, failed = await pushed.wait_acked()
    assert [m.data for m in successful] == [0, 20, 40, 60]
    assert [m.data for m in failed] == [1, 3, 5, 7, 8, 9, 10]
    reasons = {m.data: m.failure.reason for m in failed if m.failure is not None}
    assert reasons[1] == "odd 1"
    assert repr(reasons[5]) == "ValueError('no 5')"
    assert str(reasons[8]) == "Pipeline.handle_message must return a Message; got 'junk'"


async def test_every_message_is_acked_once_in_batches_not_one_by_one() -> None:
    pipeline = Recorder(name="p", producer=memory(), processors={"default": {"max_demand": 10}})
    async with running(pipeline):
        pushed = push(pipeline, range(30))
        successful, failed = await pushed.wait_acked()
    assert [m.data for m in successful] == list(range(30)) and failed == []
    assert [len(ok) for ok, _ in pushed.ack_calls] == [10, 10, 10]


async def test_two_acknowledgers_in_one_batch_each_hear_only_their_messages() -> None:
    pipeline = Recorder(name="p", producer=memory(), batchers={"default": {"batch_size": 4}})
    async with running(pipeline):
        first = push(pipeline, ["a", "b"])
        second = push(pipeline, ["c", "d"])
        await first.wait_acked()
        await second.wait_acked()
    assert [b[2] for b in pipeline.batches] == [["a", "b", "c", "d"]]
    assert [[m.data for m in ok] for ok, _ in first.ack_calls] == [["a", "b"]]
    assert [[m.data for m in ok] for ok, _ in second.ack_calls] == [["c", "d"]]


class BatchFails(Recorder):
    def handle_batch(
        self, batcher: str, messages: list[Message], batch_info: BatchInfo, context: object
    ) -> Sequence[Message]:
        super().handle_batch(batcher, messages, batch_info, context)
        if 3 in [m.data for m in messages]:
            raise RuntimeError("bad batch")
        if 6 in [m.data for m in messages]:
            return messages[:1]
        return [m.mark_failed("seven") if m.data == 7 else m for m in messages]


async def test_a_raising_handle_batch_fails_its_batch_only() -> None:
    pipeline = BatchFails(name="p", producer=memory(), batchers={"default": {"batch_size": 3}})
    async with running(pipeline):
        pushed = push(pipeline, range(9))
        successful, failed = await pushed.wait_acked()
    assert [b[2] for b in pipeline.batches] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert [m.data for m in successful] == [0, 1, 2]
    assert [m.data for m in failed] == [3, 4, 5, 6, 7, 8]
    assert {str(m.failure.reason) for m in failed if m.failure} == {
        "bad batch",
        "Pipeline.handle_batch returned 1 messages for a batch of 3; it must return every "
        "message it was given",
    }
    assert pipeline.failed_seen == [[3, 4, 5], [6, 7, 8]]


async def test_a_message_routed_to_an_unknown_batcher_fails_with_the_batchers_named() -> None:
    class Lost(Pipeline):
        def handle_message(self, processor: str, message: Message, context: object) -> Message:
            return message.put_batcher("nowhere")

    pipeline = Lost(name="p", producer=memory(), batchers={"a": {}, "b": {}})
    async with running(pipeline):
        _, failed = await push(pipeline, [1]).wait_acked()
    assert failed[0].failure is not None
    assert str(failed[0].failure.reason) == (
        "Pipeline.handle_message routed a message to batcher 'nowhere'; the pipeline's "
        "batchers are: a, b (route with Message.put_batcher)"
    )


async def test_handle_failed_sees_failed_messages_and_may_update_them_before_the_ack() -> None:
    class Tagging(Picky):
        async def handle_failed(
            self, messages: list[Message], context: object
        ) -> Sequence[Message]:
            return [m.put_data(("seen", m.data, context)) for m in messages]

    pipeline = Tagging(name="p", producer=memory(), context="ctx")
    async with running(pipeline):
        _, failed = await push(pipeline, [2, 3]).wait_acked()
    assert [m.data for m in failed] == [("seen", 3, "ctx")]


async def test_a_broken_handle_failed_is_logged_and_the_messages_still_fail(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(Picky):
        def handle_failed(self, messages: list[Message], context: object) -> Sequence[Message]:
            raise RuntimeError("handle_failed broke")

    pipeline = Broken(name="p", producer=memory())
    async with running(pipeline):
        _, failed = await push(pipeline, [3]).wait_acked()
    assert [m.data for m in failed] == [3]
    assert "Pipeline.handle_failed raised; acking as failed" in caplog.text


async def test_a_raising_acknowledger_is_logged_and_the_stage_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Exploding:
        def ack(self, successful: Sequence[Message], failed: Sequence[Message]) -> None:
            raise RuntimeError("broker gone")

    pipeline = Recorder(name="p", producer=memory())
    queue = pipeline.options.producer.options.queue  # type: ignore[attr-defined]
    async with running(pipeline):
        queue.push_nowait([1], acknowledger=Exploding())
        pushed = push(pipeline, [2])
        successful, _ = await pushed.wait_acked()
    assert [m.data for m in successful] == [2]
    assert "raised on ack of 1 successful, 0 failed messages" in caplog.text


async def test_async_hooks_and_async_acknowledgers_are_awaited() -> None:
    class Slow(Pipeline):
        async def handle_message(
            self, processor: str, message: Message, context: object
        ) -> Message:
            return message.put_data(message.data * 2)  # type: ignore[operator]

        async def handle_batch(
            self, batcher: str, messages: list[Message], info: BatchInfo, context: object
        ) -> Sequence[Message]:
            return [m.put_data(m.data + 1) for m in messages]  # type: ignore[operator]

    class AsyncAck(Pushed):
        async def ack(  # type: ignore[override]
            self, successful: Sequence[Message], failed: Sequence[Message]
        ) -> None:
            super().ack(successful, failed)

    pipeline = Slow(name="p", producer=memory(), batchers={"default": {"batch_size": 2}})
    queue = pipeline.options.producer.options.queue  # type: ignore[attr-defined]
    async with running(pipeline):
        pushed = AsyncAck()
        pushed.messages = [Message(i, acknowledger=pushed, ack_data=i) for i in range(4)]
        queue.push_messages_nowait(pushed.messages)
        successful, _ = await pushed.wait_acked()
    assert [m.data for m in successful] == [1, 3, 5, 7]


async def test_wait_acked_says_which_messages_are_missing_after_its_timeout() -> None:
    pipeline = Recorder(name="p", producer=memory())
    pushed = push(pipeline, [1, 2])  # the pipeline never runs
    with pytest.raises(TimeoutError) as info:
        await pushed.wait_acked(timeout=2.0)
    assert str(info.value) == (
        "wait_acked: 0 of 2 pushed messages acknowledged within 2 s; not yet: positions [0, 1]"
    )


async def test_wait_acked_fails_on_a_message_acked_twice() -> None:
    pushed = Pushed()
    pushed.messages = [Message("x", acknowledger=pushed, ack_data=0)]
    pushed.ack(pushed.messages, [])
    pushed.ack([], pushed.messages)
    with pytest.raises(AssertionError, match=r"message 0 \('x'\) acknowledged twice"):
        await pushed.wait_acked()
