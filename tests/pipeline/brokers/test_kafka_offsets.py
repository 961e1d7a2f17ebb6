"""The Kafka producer's commit rule (``corral.pipeline.producers.offsets``), with plain numbers
and an independent model: the committable offset is the lowest one emitted and not acked."""

from __future__ import annotations

import random

import pytest

from corral.pipeline.producers.offsets import OffsetTracker


def test_an_ack_out_of_order_never_lets_the_commit_skip_an_earlier_unacked_offset() -> None:
    t = OffsetTracker()
    assert t.committable is None and not t.dirty
    for offset in (4, 5, 6, 7):
        t.emitted(offset)
    for offset in (5, 6, 7):
        t.acked(offset)
    assert (t.committable, t.in_flight, t.uncommitted) == (4, 1, 4)
    t.acked(4)
    assert (t.committable, t.in_flight, t.uncommitted) == (8, 0, 0)
    t.committed = 8
    assert not t.dirty


def test_gaps_in_offsets_are_passed_once_everything_before_is_acked() -> None:
    t = OffsetTracker()
    for offset in (10, 13, 20):
        t.emitted(offset)
    t.acked(20)
    t.acked(10)
    assert t.committable == 13
    t.acked(13)
    assert t.committable == 21


def test_offsets_must_increase() -> None:
    t = OffsetTracker()
    t.emitted(3)
    with pytest.raises(ValueError, match="offsets must increase; got 3 after 3"):
        t.emitted(3)


@pytest.mark.parametrize("seed", range(20))
def test_the_tracker_agrees_with_a_model_under_random_ack_orders(seed: int) -> None:
    rng = random.Random(seed)
    offsets = sorted(rng.sample(range(500), 60))
    t = OffsetTracker()
    emitted: list[int] = []
    acked: set[int] = set()
    order = offsets[:]
    rng.shuffle(order)
    pending = list(order)
    for offset in offsets:
        t.emitted(offset)
        emitted.append(offset)
        # ack a few of the emitted, in random order
        for candidate in [o for o in pending if o in emitted][: rng.randint(0, 3)]:
            pending.remove(candidate)
            t.acked(candidate)
            acked.add(candidate)
        unacked = [o for o in emitted if o not in acked]
        assert t.committable == (min(unacked) if unacked else emitted[-1] + 1)
        assert t.in_flight == len(unacked)
