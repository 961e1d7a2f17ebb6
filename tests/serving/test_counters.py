"""The latency ring of a serving's counters, without an event loop."""

from __future__ import annotations

import numpy as np

from corral.serving.counters import LATENCY_WINDOW, Counters


def test_no_latencies_give_zero_percentiles() -> None:
    assert Counters().latency_percentiles() == (0.0, 0.0)


def test_latency_ring_keeps_the_last_window_across_a_wrapping_write() -> None:
    counters = Counters()
    counters.record_latencies(np.full(LATENCY_WINDOW - 2, 1000.0))
    # 1..101 written as two batches; the second wraps around the ring's end.
    counters.record_latencies(np.arange(1.0, 51.0))
    counters.record_latencies(np.arange(51.0, 102.0))
    assert counters.latency_count == LATENCY_WINDOW + 99
    assert sorted(counters.latencies)[:101] == list(np.arange(1.0, 102.0))
    assert int((counters.latencies == 1000.0).sum()) == LATENCY_WINDOW - 101


def test_a_write_larger_than_the_window_keeps_its_last_values() -> None:
    counters = Counters()
    counters.record_latencies(np.arange(LATENCY_WINDOW + 10, dtype=np.float64))
    assert sorted(counters.latencies) == list(np.arange(10.0, LATENCY_WINDOW + 10))
    assert counters.latency_percentiles() == (
        float(np.percentile(np.arange(10.0, LATENCY_WINDOW + 10), 50)),
        float(np.percentile(np.arange(10.0, LATENCY_WINDOW + 10), 99)),
    )


def test_one_latency_at_a_time_wraps_like_a_batch() -> None:
    counters = Counters()
    counters.record_latencies(np.full(LATENCY_WINDOW - 1, 1000.0))
    counters.record_latency(1.0)
    counters.record_latency(2.0)  # wraps to slot 0
    assert (counters.latencies[-1], counters.latencies[0]) == (1.0, 2.0)
    assert counters.latency_count == LATENCY_WINDOW + 1
