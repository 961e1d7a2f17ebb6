"""The pipeline's pure policy: demand book, batcher credit, batch groups, rate windows."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.pipeline import Message
from corral.pipeline.message import Failure
from corral.pipeline.options import BackoffOptions, RetryOptions
from corral.pipeline.policy import BatchGroups, Credits, Dispatcher, RateLimiter, retry_delay


def msgs(*data: object, key: object = None) -> list[Message]:
    return [Message(d, batch_key=key) for d in data]


# -- Dispatcher ------------------------------------------------------------------------------


def test_the_producer_is_asked_only_for_demand_the_buffer_cannot_meet() -> None:
    d: Dispatcher[str] = Dispatcher(partitions=1, capacity=100)
    d.subscribe("a", 0)
    d.ask("a", 10)
    assert d.want() == 10
    d.asked(10)
    assert d.want() == 0  # owed already covers it
    assert d.emitted(4)
    d.push(0, msgs(1, 2, 3, 4))
    assert d.take() == [("a", msgs(1, 2, 3, 4))]
    assert d.demand_of("a") == 6 and d.owed == 6 and d.want() == 0


def test_messages_go_to_the_oldest_demand_first_and_never_beyond_it() -> None:
    d: Dispatcher[str] = Dispatcher(partitions=1, capacity=100)
    for c in ("a", "b"):
        d.subscribe(c, 0)
    d.ask("a", 2)
    d.ask("b", 3)
    d.asked(d.want())
    d.emitted(6)
    d.push(0, msgs(1, 2, 3, 4, 5, 6))
    assert d.take() == [("a", msgs(1, 2)), ("b", msgs(3, 4, 5))]
    assert d.buffered == 1 and d.deliverable() == 0


def test_a_partition_goes_only_to_its_consumer() -> None:
    d: Dispatcher[str] = Dispatcher(partitions=2, capacity=100)
    d.subscribe("p0", 0)
    d.subscribe("p1", 1)
    d.ask("p0", 5)
    d.ask("p1", 5)
    d.push(1, msgs("x", "y"))
    assert d.want() == 8  # p0 wants 5, p1 wants 3 more than buffered
    assert d.take() == [("p1", msgs("x", "y"))]


def test_a_rate_limit_caps_what_one_take_hands_out() -> None:
    d: Dispatcher[str] = Dispatcher(partitions=1, capacity=100)
    d.subscribe("a", 0)
    d.ask("a", 10)
    d.push(0, msgs(*range(10)))
    assert d.take(limit=3) == [("a", msgs(0, 1, 2))]
    assert d.take(limit=0) == []
    assert d.deliverable() == 7


def test_emitting_more_than_owed_is_reported() -> None:
    d: Dispatcher[str] = Dispatcher(partitions=1, capacity=100)
    d.asked(2)
    assert not d.emitted(3)
    assert d.owed == 0


def test_a_cancelled_consumer_loses_its_demand_but_its_partition_keeps_the_buffer() -> None:
    d: Dispatcher[str] = Dispatcher(partitions=1, capacity=100)
    d.subscribe("a", 0)
    d.ask("a", 4)
    d.push(0, msgs(1, 2))
    assert d.cancel("a") == 4
    d.subscribe("b", 0)
    d.ask("b", 1)
    assert d.take() == [("b", msgs(1))]


@given(
    st.lists(
        st.tuples(st.sampled_from(["ask", "emit", "take"]), st.integers(0, 3), st.integers(1, 9))
    )
)
def test_buffered_plus_owed_never_exceeds_the_capacity(ops: list[tuple[str, int, int]]) -> None:
    d: Dispatcher[int] = Dispatcher(partitions=2, capacity=20)
    for c in range(4):
        d.subscribe(c, c)
    for op, consumer, n in ops:
        if op == "ask":
            d.ask(consumer, n)
            d.asked(d.want())
        elif op == "emit":
            k = min(n, d.owed)
            d.emitted(k)
            d.push(consumer % 2, msgs(*range(k)))
        else:
            d.take()
        assert d.buffered + d.owed <= 20
        assert d.buffered == sum(d.buffered_for(c) for c in (0, 1))


# -- Credits ---------------------------------------------------------------------------------


def test_credit_fills_each_window_within_the_batcher_capacity() -> None:
    credits = Credits(capacity=150, window=100)
    credits.add(0)
    credits.add(1)
    assert credits.grants(held=0) == [(0, 100), (1, 50)]
    credits.received(0, 60)  # 40 left: below half the window
    assert credits.grants(held=60) == []  # no room: 60 held + 40 + 50 outstanding
    # Round robin: processor 1 (at half its window) is served first this time.
    assert credits.grants(held=0) == [(1, 50), (0, 10)]


def test_credit_is_handed_out_round_robin() -> None:
    credits = Credits(capacity=100, window=100)
    for p in (0, 1):
        credits.add(p)
    assert credits.grants(held=0) == [(0, 100)]
    credits.received(0, 100)
    assert credits.grants(held=0) == [(1, 100)]
    credits.remove(1)
    assert credits.grants(held=0) == [(0, 100)]


# -- BatchGroups -----------------------------------------------------------------------------


def test_a_group_is_cut_when_it_reaches_batch_size() -> None:
    groups = BatchGroups(batch_size=3)
    assert groups.add(msgs(1, 2)) == []
    assert groups.opened == [(None, 1)]
    assert groups.add(msgs(3, 4)) == [(None, 1, msgs(1, 2, 3))]
    assert groups.opened == [(None, 1), (None, 2)]
    assert groups.held == 1


def test_each_batch_key_has_its_own_group() -> None:
    groups = BatchGroups(batch_size=2)
    cut = groups.add(msgs("a1", key="a") + msgs("b1", key="b") + msgs("a2", key="a"))
    assert cut == [("a", 1, msgs("a1", "a2", key="a"))]
    assert groups.cut_all() == [("b", 2, msgs("b1", key="b"))]
    assert groups.held == 0


def test_a_stale_timeout_cuts_nothing() -> None:
    groups = BatchGroups(batch_size=2)
    assert groups.add(msgs(1, 2, 3)) == [(None, 1, msgs(1, 2))]  # group 2 holds 3
    assert groups.opened == [(None, 1), (None, 2)]
    assert groups.cut(None, group_id=1) is None
    assert groups.cut(None, group_id=2) == msgs(3)


# -- RateLimiter -----------------------------------------------------------------------------


def test_the_rate_limiter_allows_a_number_of_messages_per_fixed_window() -> None:
    limiter = RateLimiter(allowed=10, interval=1.0, start=0.0)
    assert limiter.take(0.0, 7) == 7
    assert limiter.take(0.5, 7) == 3
    assert limiter.window_end(0.5) == 1.0
    assert limiter.take(1.0, 25) == 10
    assert limiter.take(3.2, 1) == 1  # windows skipped while idle
    assert limiter.window_end(3.2) == 4.0


# -- retry_delay -----------------------------------------------------------------------------


def test_a_retryable_failure_waits_the_backoff_of_its_attempt_until_attempts_are_spent() -> None:
    backoff = BackoffOptions(initial=0.1, multiplier=3.0, max=0.5)
    retry = RetryOptions(max_attempts=4, backoff=backoff)
    failure = Failure("boom")
    delays = [retry_delay(failure, attempt, retry) for attempt in (1, 2, 3, 4, 5)]
    assert delays == [pytest.approx(0.1), pytest.approx(0.3), 0.5, None, None]


def test_no_retry_for_a_success_a_final_failure_or_a_pipeline_without_retry() -> None:
    retry = RetryOptions(max_attempts=3)
    assert retry_delay(None, 1, retry) is None
    assert retry_delay(Failure("bad input", retry=False), 1, retry) is None
    assert retry_delay(Failure("boom"), 1, None) is None
