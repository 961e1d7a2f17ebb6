"""The memory producer runs the broker conformance suite (tests/pipeline/conformance.py), on
virtual time: proof that the suite asks nothing of a producer beyond the Producer contract.

The memory producer drops a failed message (its acknowledger hears it) or, with the
pipeline's ``dead_letter=<MemoryQueue>``, moves it there. It cannot redeliver: a message a
stage took is gone from the queue, so the redelivery cases skip.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Self

import pytest
from conformance import FailureMode, ProducerConformance

from corral.pipeline import Message
from corral.pipeline.producers.memory import MemoryQueue


class MemoryHarness:
    """A ``MemoryQueue`` as the broker; the harness is the acknowledger of every message it
    publishes, and counts acks (failing on a second ack of one message)."""

    name = "memory"
    failure_modes: frozenset[FailureMode] = frozenset({"drop", "dead_letter"})
    redelivers_abandoned = False

    def unreachable_options(self, url_host: str, timeout: float) -> None:
        return None

    async def lose_connections(self) -> bool:
        return False  # no broker

    def __init__(self) -> None:
        self.queue = MemoryQueue(max_size=100_000)
        self.dead_letter = MemoryQueue(max_size=100_000, name="dead letters")
        self.published = 0
        self.acked: set[int] = set()
        self.errors: list[str] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self.errors == []

    def pipeline_options(self, *, on_failure: FailureMode = "drop") -> dict[str, object]:
        options: dict[str, object] = {
            "producer": {"module": "memory", "options": {"queue": self.queue}}
        }
        if on_failure == "dead_letter":
            options["dead_letter"] = self.dead_letter
        return options

    async def publish(self, payloads: Sequence[bytes]) -> None:
        start = self.published
        self.published += len(payloads)
        messages = [
            Message(p, acknowledger=self, ack_data=start + i) for i, p in enumerate(payloads)
        ]
        self.queue.push_messages_nowait(messages)

    def ack(self, successful: Sequence[Message], failed: Sequence[Message]) -> None:
        for m in (*successful, *failed):
            index = m.ack_data
            assert isinstance(index, int)
            if index in self.acked:
                self.errors.append(f"message {index} ({m.data!r}) acknowledged twice")
            self.acked.add(index)

    def payload(self, message: Message) -> bytes:
        assert isinstance(message.data, bytes)
        return message.data

    async def unacked(self) -> int:
        return self.published - len(self.queue) - len(self.acked)

    async def outstanding(self) -> int:
        assert self.errors == []
        return self.published - len(self.acked)

    async def dead_letters(self) -> list[bytes]:
        taken = self.dead_letter._take(len(self.dead_letter))
        return [self.payload(m) for m in taken]


class TestMemoryConformance(ProducerConformance):
    @pytest.fixture
    def harness(self) -> MemoryHarness:
        return MemoryHarness()
