"""The batching policy, without an event loop. Names use Nx.Serving's notation: with
batch_size 3, ``5=3+2`` is five one-sample requests cut as a batch of 3 and one of 2."""

from __future__ import annotations

import pytest

from corral.serving import BatchPolicy, Request
from corral.serving.policy import Bucket, PromotingPolicy


def policy(
    batch_size: int = 3, timeout: float = 0.1, max_queue: int = 100, pad_to: tuple[int, ...] = ()
) -> BatchPolicy:
    return BatchPolicy(
        batch_size=batch_size, batch_timeout=timeout, max_queue=max_queue, pad_to=pad_to
    )


def push(
    p: BatchPolicy, *sizes: int, at: float = 0.0, key: object = None, deadline: float | None = None
) -> list[Request]:
    out = []
    for i, size in enumerate(sizes):
        r = Request(size, at, deadline, key, payload=f"{key}:{i}")
        assert p.push(r)
        out.append(r)
    return out


def sizes(batch: object) -> list[int]:
    return [r.size for r in batch.requests]  # type: ignore[attr-defined]


def test_3_is_3_cut_at_once_when_full() -> None:
    p = policy()
    push(p, 1, 1, 1)
    batch = p.cut(0.0)
    assert batch is not None
    assert (sizes(batch), batch.size, batch.padded_size, batch.reason) == ([1, 1, 1], 3, 3, "full")
    assert len(p) == 0 and p.cut(1.0) is None


def test_5_is_3_plus_2_after_timeout() -> None:
    p = policy()
    push(p, 1, 1, 1, 1, 1)
    first = p.cut(0.0)
    assert first is not None and first.size == 3 and first.reason == "full"
    assert p.cut(0.099) is None
    second = p.cut(0.1)
    assert second is not None
    assert (second.size, second.padded_size, second.reason) == (2, 2, "timeout")


def test_5_is_3_plus_2_pad() -> None:
    p = policy(pad_to=(3,))
    push(p, 1, 1, 1, 1, 1)
    assert p.cut(0.0).padded_size == 3  # type: ignore[union-attr]
    second = p.cut(0.1)
    assert second is not None and (second.size, second.padded_size, second.pad) == (2, 3, 1)


def test_pad_picks_smallest_size_that_fits() -> None:
    p = policy(batch_size=8, pad_to=(8, 1, 4, 2))
    assert [p.padded_size(n) for n in range(1, 9)] == [1, 2, 4, 4, 8, 8, 8, 8]


def test_pad_to_smaller_than_batch_size_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"largest pad_to size must be >= batch_size=4; got \(2,\)"
    ):
        policy(batch_size=4, pad_to=(2,))


def test_2_plus_2_with_batch_size_3_is_2_then_2_requests_never_split() -> None:
    p = policy()
    push(p, 2, 2)
    first = p.cut(0.0)
    assert first is not None and sizes(first) == [2] and first.reason == "full"
    assert p.cut(0.0) is None
    assert sizes(p.cut(0.1)) == [2]  # type: ignore[arg-type]


def test_1_plus_2_is_3() -> None:
    p = policy()
    push(p, 1, 2)
    assert sizes(p.cut(0.0)) == [1, 2]  # type: ignore[arg-type]


def test_request_larger_than_batch_size_is_refused() -> None:
    p = policy()
    with pytest.raises(
        ValueError, match="request of 4 samples: a request must hold 1 to batch_size=3"
    ):
        p.push(Request(4, 0.0))
    with pytest.raises(ValueError):
        p.push(Request(0, 0.0))


def test_timeout_counts_from_the_oldest_request() -> None:
    p = policy()
    push(p, 1, at=0.0)
    push(p, 1, at=0.05)
    assert p.wakeup() == 0.1
    assert p.cut(0.0999) is None
    batch = p.cut(0.1)
    assert batch is not None and batch.size == 2


def test_zero_timeout_cuts_whatever_is_queued() -> None:
    p = policy(timeout=0.0)
    push(p, 1)
    batch = p.cut(0.0)
    assert batch is not None and batch.reason == "timeout"


def test_max_queue_refuses_without_queueing() -> None:
    p = policy(max_queue=2)
    push(p, 1, 1)
    assert p.full
    assert not p.push(Request(1, 0.0))
    assert len(p) == 2 and p.samples == 2


def test_keys_batch_separately_and_oldest_ready_key_goes_first() -> None:
    p = policy()
    push(p, 1, at=0.0, key="a")
    push(p, 1, 1, 1, at=0.01, key="b")
    push(p, 1, 1, at=0.02, key="a")
    # both keys are full; "a" has the oldest head
    first = p.cut(0.02)
    assert (
        first is not None
        and first.key == "a"
        and [r.payload for r in first.requests] == ["a:0", "a:0", "a:1"]
    )
    second = p.cut(0.02)
    assert second is not None and second.key == "b" and second.size == 3


def test_key_that_timed_out_goes_before_a_younger_full_key() -> None:
    p = policy()
    push(p, 1, at=0.0, key="old")
    push(p, 1, 1, 1, at=0.05, key="new")
    assert p.cut(0.1).key == "old"  # type: ignore[union-attr]
    assert p.cut(0.1).key == "new"  # type: ignore[union-attr]


def test_only_full_keys_are_ready_before_timeout() -> None:
    p = policy()
    push(p, 1, at=0.0, key="a")
    push(p, 1, 1, 1, at=0.01, key="b")
    assert p.cut(0.05).key == "b"  # type: ignore[union-attr]
    assert p.cut(0.05) is None
    assert p.ready("a") is False


def test_expire_drops_requests_at_their_deadline_earliest_first() -> None:
    p = policy()
    a = push(p, 1, at=0.0, deadline=0.05)[0]
    b = push(p, 1, at=0.0, deadline=0.02)[0]
    keep = push(p, 1, at=0.0)[0]
    assert p.wakeup() == 0.02
    assert p.expire(0.019) == []
    assert p.expire(0.05) == [b, a]
    assert len(p) == 1
    batch = p.cut(0.1)
    assert batch is not None and batch.requests == (keep,)


def test_expired_requests_never_reach_a_batch() -> None:
    p = policy()
    push(p, 1, 1, at=0.0, deadline=0.01)
    push(p, 1, at=0.0)
    assert len(p.expire(0.01)) == 2
    assert p.cut(0.01) is None  # one request left, not full, not timed out


def test_removed_request_leaves_the_queue_and_its_deadline() -> None:
    p = policy()
    a, b, c = push(p, 1, 1, 1, deadline=1.0)
    assert p.remove(b)
    assert not p.remove(b)
    assert len(p) == 2 and not p.ready(None)
    assert p.expire(1.0) == [a, c]


def test_a_cut_request_is_not_removed_again() -> None:
    p = policy()
    (a, *_rest) = push(p, 1, 1, 1)
    p.cut(0.0)
    assert not p.remove(a)


def test_force_cuts_every_key() -> None:
    p = policy()
    push(p, 1, key="a")
    push(p, 1, key="b")
    assert p.cut(0.0) is None
    assert {p.cut(0.0, force=True).key, p.cut(0.0, force=True).key} == {"a", "b"}  # type: ignore[union-attr]
    assert p.cut(0.0, force=True) is None


def test_wakeup_is_none_when_empty_and_ignores_cut_requests_deadlines() -> None:
    p = policy()
    assert p.wakeup() is None
    push(p, 1, 1, 1, deadline=0.01)
    p.cut(0.0)
    assert p.wakeup() is None


def test_7_is_3_plus_3_plus_1_pad_to_2() -> None:
    p = policy(pad_to=(2, 3))
    push(p, 1, 1, 1, 1, 1, 1, 1)
    cuts = [p.cut(0.0), p.cut(0.0), p.cut(0.0), p.cut(0.1)]
    assert [(c.size, c.padded_size) if c else None for c in cuts] == [(3, 3), (3, 3), None, (1, 2)]


def test_deadline_heap_stays_bounded() -> None:
    p = policy(batch_size=1, max_queue=2)
    for i in range(1000):
        push(p, 1, at=float(i), deadline=1e9)
        p.cut(float(i))
    assert len(p._deadlines) <= 2 * 2 + 64 + 1


def test_a_batch_is_ready_exactly_at_wakeup_despite_float_rounding() -> None:
    p = policy(timeout=0.01)
    push(p, 1, at=0.078)
    wakeup = p.wakeup()
    assert wakeup is not None and wakeup - 0.078 < 0.01  # rounding: less than the timeout
    assert p.cut(wakeup) is not None


def test_offer_says_how_many_samples_the_key_holds_and_0_when_full() -> None:
    p = policy(batch_size=3, max_queue=3)
    assert p.offer(Request(1, 0.0)) == 1
    assert p.offer(Request(2, 0.0, key="b")) == 2
    assert p.offer(Request(2, 0.0)) == 3  # 3 >= batch_size: ready, as ready(None) says
    assert p.ready(None) and not p.ready("b")
    extra = Request(1, 0.0)
    assert p.offer(extra) == 0 and not extra.queued and len(p) == 3


# -- bucket promotion (PromotingPolicy) ------------------------------------------------------


def promoting(batch_size: int = 4, promote: int = 1) -> PromotingPolicy:
    return PromotingPolicy(batch_size=batch_size, batch_timeout=0.1, max_queue=100, promote=promote)


def buckets(length: int, group: object = "g") -> Bucket:
    return Bucket((16, 32, 64).index(length), length, group)


def test_a_cut_with_room_takes_the_next_smaller_under_full_bucket_padded_up() -> None:
    p = promoting()
    small = push(p, 1, 1, at=0.0, key=buckets(16))
    large = push(p, 1, at=0.05, key=buckets(32))
    batch = p.cut(0.15)  # both timed out: the oldest head (16) is cut first, with no room up
    assert batch is not None and batch.key == buckets(16) and batch.promoted == 0
    assert list(batch.requests) == small
    small = push(p, 1, 1, at=0.2, key=buckets(16))
    batch = p.cut(0.2 + 0.01, force=True)  # the 32 bucket's head is older: it is cut and fills
    assert batch is not None and batch.key == buckets(32)
    assert list(batch.requests) == large + small and batch.promoted == 2
    assert (batch.size, len(p)) == (3, 0)


def test_promotion_goes_at_most_promote_buckets_down_nearest_first_and_not_across_groups() -> None:
    p = promoting(batch_size=8, promote=1)
    tiny = push(p, 1, key=buckets(16))
    mid = push(p, 1, key=buckets(32))
    other = push(p, 1, key=buckets(32, group="h"))
    top = push(p, 1, at=-1.0, key=buckets(64))
    assert list(p.cut(0.05).requests) == top  # type: ignore[union-attr]  # 32 not ready yet
    p.push(top[0])
    batch = p.cut(0.1)  # every bucket ready now: the nearest one down rides along
    assert batch is not None and list(batch.requests) == top + mid
    assert {id(r) for r in tiny + other} == {id(r) for r in [*tiny, *other] if r.queued}
    two = promoting(batch_size=8, promote=2)
    for r in tiny + mid + top:
        r.queued = False
        two.push(r)
    batch = two.cut(1.0)
    assert batch is not None and [r.key.length for r in batch.requests] == [64, 32, 16]  # type: ignore[attr-defined]


def test_a_full_bucket_is_never_promoted_from_and_room_is_respected() -> None:
    p = promoting(batch_size=3)
    old = push(p, 1, at=-1.0, key=buckets(32))
    full = push(p, 1, 1, 1, key=buckets(16))
    batch = p.cut(0.5)  # 32 timed out with room for 2, but the full 16 bucket cuts on its own
    assert batch is not None and list(batch.requests) == old and batch.promoted == 0
    batch = p.cut(0.5)
    assert batch is not None and list(batch.requests) == full
    q = promoting(batch_size=3)
    head = push(q, 2, at=-1.0, key=buckets(32))
    push(q, 2, key=buckets(16))  # does not fit in the room of 1: nor does what queues behind it
    push(q, 1, key=buckets(16))
    batch = q.cut(0.5)
    assert batch is not None and list(batch.requests) == head and len(q) == 2


def test_promoting_policy_checks_promote() -> None:
    with pytest.raises(ValueError, match="PromotingPolicy: promote must be an int >= 1; got 0"):
        promoting(promote=0)
