"""pipeline.statistics(): exact counts of what a pipeline took in and where each message
ended, in total and per stage."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline_helpers import memory, running

from corral.pipeline import BatchInfo, Message, Pipeline, PipelineStatistics, StageStatistics
from corral.pipeline.testing import push
from corral.testing import Gate, wait_all_tasks_blocked


class OddsFailEarly(Pipeline):
    """Fails odd numbers in the processor; sends the even ones to batcher 'b', whose
    handle_batch waits at ``gate`` and then fails 4."""

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self.gate = Gate()

    def handle_message(self, processor: str, message: Message, context: object) -> Message:
        assert isinstance(message.data, int)
        if message.data % 2:
            return message.mark_failed("odd")
        return message.put_batcher("b")

    async def handle_batch(
        self, batcher: str, messages: list[Message], batch_info: BatchInfo, context: object
    ) -> Sequence[Message]:
        await self.gate.enter()
        return [m.mark_failed("four") if m.data == 4 else m for m in messages]


def make() -> OddsFailEarly:
    return OddsFailEarly(
        name="odds",
        producer=memory(),
        processors={"default": {"concurrency": 2}},
        batchers={"b": {"batch_size": 2, "batch_timeout": 0.1, "concurrency": 1}},
    )


async def test_statistics_count_each_message_once_where_it_ended() -> None:
    pipeline = make()
    assert pipeline.statistics() == PipelineStatistics(
        name="odds", produced=0, in_flight=0, acked=0, failed=0, stages={}
    )
    async with running(pipeline):
        pushed = push(pipeline, range(10))
        await wait_all_tasks_blocked()
        # The odd five ended in the processors; the even five wait at the batch processor.
        held = pipeline.statistics()
        assert (held.produced, held.in_flight, held.acked, held.failed) == (10, 5, 0, 5)
        assert dict(held.stages) == {"processor.default": StageStatistics(acked=0, failed=5)}
        pipeline.gate.open()
        successful, failed = await pushed.wait_acked()
    assert len(successful) == 4 and len(failed) == 6
    stats = pipeline.statistics()
    assert (stats.produced, stats.in_flight, stats.acked, stats.failed) == (10, 0, 4, 6)
    assert dict(stats.stages) == {
        "batch_processor.b": StageStatistics(acked=4, failed=1),
        "processor.default": StageStatistics(acked=0, failed=5),
    }


async def test_statistics_add_up_across_start_and_stop() -> None:
    pipeline = make()
    pipeline.gate.open()
    for _ in range(2):
        async with running(pipeline):
            await push(pipeline, range(4)).wait_acked()
    stats = pipeline.statistics()
    # 0 and 2 are acked twice; 1 and 3 fail twice (4, which handle_batch fails, is not sent).
    assert (stats.produced, stats.in_flight, stats.acked, stats.failed) == (8, 0, 4, 4)
    assert dict(stats.stages) == {
        "batch_processor.b": StageStatistics(acked=4, failed=0),
        "processor.default": StageStatistics(acked=0, failed=4),
    }
