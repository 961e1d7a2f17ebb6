"""Introspection as docs/observability.md describes it: walking ``which_children`` from the
node's root gives a pipeline's whole tree, every process labelled by its path of child ids
or its registered name."""

from __future__ import annotations

from pipeline_helpers import Recorder, memory, running

from corral import Pid, Supervisor


async def walk(sup: Pid, depth: int = 0) -> list[str]:
    rows: list[str] = []
    for child in await Supervisor.which_children(sup):
        assert child.pid is not None
        rows.append(f"{'  ' * depth}{child.id} {child.type} {child.pid.label}")
        if child.type == "supervisor":
            rows += await walk(child.pid, depth + 1)
    return rows


async def test_walking_which_children_from_the_root_labels_the_whole_pipeline_tree() -> None:
    pipeline = Recorder(
        name="features",
        producer=memory(),
        processors={"default": {"concurrency": 2}},
        batchers={"b": {"batch_size": 2}},
    )
    async with running(pipeline) as node:
        assert await walk(node.root) == [
            "features supervisor features",
            "  producers supervisor features/producers",
            "    producer.0 worker features.producer.0",
            "  processors supervisor features/processors",
            "    processor.0 worker features.processor.default.0",
            "    processor.1 worker features.processor.default.1",
            "  batchers supervisor features/batchers",
            "    batcher.b supervisor features/batchers/batcher.b",
            "      batcher worker features.batcher.b",
            "      batch_processors supervisor features/batchers/batcher.b/batch_processors",
            "        batch_processor.0 worker features.batch_processor.b.0",
        ]
        assert await Supervisor.count_children(node.root) == {
            "specs": 1,
            "active": 1,
            "supervisors": 1,
            "workers": 0,
        }
        assert node.registered() == [
            "features",
            "features.batch_processor.b.0",
            "features.batcher.b",
            "features.processor.default.0",
            "features.processor.default.1",
            "features.producer.0",
        ]
        assert len(node.processes()) == 1 + 11  # the root, and the tree below it
