"""``pipeline.statistics()``: how many messages a pipeline took in and how each one ended.

Every message ends exactly once, in the stage that acknowledges it (``stages.ending``), so
the counts add up: ``produced == acked + failed + in_flight``. The counters are plain ints
on the ``Pipeline`` object, bumped by the ending stage once per batch of ended messages
(and by a producer stage once per batch it accepts): always on, no lock (every stage runs
on the node's loop), and they survive restarts inside the pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["PipelineCounters", "PipelineStatistics", "StageCounter", "StageStatistics"]


@dataclass(frozen=True, slots=True)
class StageStatistics:
    """The messages that ended in one stage (all its concurrent processes together):
    ``acked`` successful, ``failed`` failed (after ``handle_failed`` and the dead-letter
    sink)."""

    acked: int
    failed: int


@dataclass(frozen=True, slots=True)
class PipelineStatistics:
    """A snapshot of one pipeline's message counts since the ``Pipeline`` was made.

    ``produced`` messages were handed over by the producers; ``acked`` and ``failed`` have
    ended; ``in_flight`` is the rest (``produced - acked - failed``), inside a stage or
    lost in one that crashed (a broker delivers those again). ``stages`` maps
    ``"producer"``, ``"processor.<name>"``, ``"batcher.<name>"`` and
    ``"batch_processor.<name>"`` to the messages that ended there; a stage that ended none
    is absent.
    """

    name: str
    produced: int
    in_flight: int
    acked: int
    failed: int
    stages: Mapping[str, StageStatistics]


class StageCounter:
    """The counts of one stage, shared by its processes; an ``Ender`` adds to it."""

    __slots__ = ("acked", "failed")

    def __init__(self) -> None:
        self.acked = 0
        self.failed = 0


class PipelineCounters:
    """One pipeline's counters: ``produced`` and a ``StageCounter`` per stage."""

    __slots__ = ("_stages", "produced")

    def __init__(self) -> None:
        self.produced = 0
        self._stages: dict[str, StageCounter] = {}

    def stage(self, stage: str) -> StageCounter:
        """The counter of ``stage`` (e.g. ``"processor.default"``), made on first use."""
        counter = self._stages.get(stage)
        if counter is None:
            counter = self._stages[stage] = StageCounter()
        return counter

    def snapshot(self, name: str) -> PipelineStatistics:
        """The counts now, as a frozen record."""
        stages = {
            key: StageStatistics(c.acked, c.failed)
            for key, c in sorted(self._stages.items())
            if c.acked or c.failed
        }
        acked = sum(s.acked for s in stages.values())
        failed = sum(s.failed for s in stages.values())
        return PipelineStatistics(
            name=name,
            produced=self.produced,
            in_flight=self.produced - acked - failed,
            acked=acked,
            failed=failed,
            stages=MappingProxyType(stages),
        )
