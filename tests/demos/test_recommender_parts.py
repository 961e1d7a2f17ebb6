"""The recommender demo's parts, one at a time: data, events, validation, model, state, scoring."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from corral import Node
from corral.demos.recommender.data import MovieLens, load_movielens
from corral.demos.recommender.model import (
    TOP,
    Recommender,
    decode_request,
    encode_request,
    implicit_ratings,
)
from corral.demos.recommender.stream import (
    Catalogue,
    Event,
    InvalidEvent,
    Parsed,
    RecommendationSystem,
    Report,
    features,
    make_events,
    parse_event,
    partition_by_user,
)
from corral.errors import ProcessExited
from corral.pipeline import Message


@pytest.fixture(scope="module")
def movielens() -> MovieLens:
    return load_movielens()


def test_movielens_loads_from_the_installed_package_in_time_order(movielens: MovieLens) -> None:
    assert (len(movielens), movielens.users, movielens.items) == (100_000, 943, 1682)
    assert np.all(np.diff(movielens.timestamp) >= 0)
    assert movielens.titles[movielens.item_ids.index("1")] == "Toy Story"
    assert movielens.cut(0.8) == 80_000
    with pytest.raises(ValueError, match=r"train_fraction must be in \(0, 1\); got 1.5"):
        movielens.cut(1.5)


def test_events_carry_the_ratings_and_one_bad_event_per_bad_every(movielens: MovieLens) -> None:
    events = make_events(movielens, 80_000, 80_050, bad_every=10, seed=0)
    assert len(events) == 55
    assert [e["seq"] for e in events] == [str(k) for k in range(55)]
    catalogue = Catalogue.of(movielens)
    good, bad = [], []
    for event in events:
        try:
            good.append(parse_event({**event, "sent": "0.0"}, catalogue))
        except InvalidEvent as exc:
            bad.append(exc.kind)
    assert len(good) == 50 and len(bad) == 5
    assert [(e.user, e.item) for e in good] == [
        (int(movielens.user[k]), int(movielens.item[k])) for k in range(80_000, 80_050)
    ]


def test_validation_names_what_is_wrong_and_normalizes(movielens: MovieLens) -> None:
    catalogue = Catalogue.of(movielens)
    good = {"seq": "7", "user": "196", "item": "242", "rating": "5", "sent": "1.5"}
    good["timestamp"] = str(catalogue.first_time)
    event = parse_event(good, catalogue)
    assert (event.seq, event.rating, event.sent) == (7, 1.0, 1.5)
    as_bytes = {k.encode(): v.encode() for k, v in good.items()}
    assert parse_event(as_bytes, catalogue) == event  # a Redis entry's fields

    cases = [
        ({"item": None}, "malformed: missing field 'item'"),
        ({"user": "0"}, "malformed: unknown user '0'"),
        ({"item": "999999"}, "malformed: unknown item '999999'"),
        ({"rating": "five"}, "malformed: not a number"),
        ({"rating": "9"}, "outlier: rating 9 outside 1-5"),
        ({"timestamp": str(catalogue.last_time + 1)}, "outlier: timestamp"),
    ]
    for change, message in cases:
        fields = {k: v for k, v in {**good, **change}.items() if v is not None}
        with pytest.raises(InvalidEvent, match=message):
            parse_event(fields, catalogue)


def test_features_are_numerical_and_categorical(movielens: MovieLens) -> None:
    catalogue = Catalogue.of(movielens)
    toy_story = movielens.item_ids.index("1")
    user = movielens.user_ids.index("1")
    event = Event(0, user, toy_story, 0.5, 874965758, 0.0)  # 1997-09-22 22:02:38 UTC
    f = features(event, catalogue)
    assert f["numerical"] == {
        "rating": 0.5,
        "hour": 22,
        "weekday": 0,
        "age": 24,
        "release_year": 1995,
    }
    assert f["categorical"] == {
        "gender": "M",
        "occupation": "technician",
        "genres": ("Animation", "Children's", "Comedy"),
    }


def test_partition_by_user_keeps_one_user_on_one_partition() -> None:
    assert partition_by_user(Message({"user": "196"})) == 196
    assert partition_by_user(Message({b"user": b"7"})) == 7
    assert partition_by_user(Message({"user": "x"})) == 0


def test_requests_round_trip_through_bytes() -> None:
    seen = np.zeros(1682, bool)
    seen[[0, 5, 1681]] = True
    request = encode_request(942, seen)
    assert request.dtype == np.uint8 and request.shape == (2 + 211,)
    users, masks = decode_request(np.stack([request, encode_request(3, ~seen)]), 1682)
    assert users.tolist() == [942, 3]
    assert np.array_equal(masks[0], seen) and np.array_equal(masks[1], ~seen)
    with pytest.raises(ValueError, match=r"user index must be in \[0, 65536\); got 70000"):
        encode_request(70_000, seen)


def _model(items: int = 30, users: int = 4, k: int = 3) -> Recommender:
    rng = np.random.default_rng(1)
    params = {
        "P": rng.normal(size=(users, k)),
        "Q": rng.normal(size=(items, k)),
        "bi": np.linspace(1.0, 0.0, items),  # item 0 the most popular
        "mu": np.array([0.1]),
        "known": np.array([True, True, False, False]),
    }
    return Recommender(params, l2=1.0)


def test_the_model_returns_the_best_unseen_items_best_first() -> None:
    model = _model()
    seen = np.zeros((2, 30), bool)
    seen[0, :5] = True
    top = model.run(np.stack([encode_request(0, seen[0]), encode_request(2, seen[1])]))
    assert top.shape == (2, TOP) and top.dtype == np.int32
    assert not set(top[0].tolist()) & set(range(5))
    # A cold user with nothing seen gets the item biases' order: popularity.
    assert top[1].tolist() == list(range(TOP))
    for row, user in ((0, 0), (1, 2)):
        vector = model.user_vector(user, seen[row])
        scores = model.Q @ vector + model.bi
        scores[seen[row]] = -np.inf
        assert np.all(np.diff(scores[top[row]]) <= 0)
        assert scores[top[row][-1]] >= np.sort(scores)[-TOP]


def test_folding_in_moves_a_cold_user_towards_what_they_saw() -> None:
    model = _model()
    seen = np.zeros(30, bool)
    seen[[7, 8]] = True
    vector = model.user_vector(3, seen)
    assert not np.allclose(vector, 0.0)
    qs, target = model.Q[seen], 1.0 - model.mu - model.bi[seen]
    expected = np.linalg.solve(qs.T @ qs + np.eye(3), qs.T @ target)
    np.testing.assert_allclose(vector, expected)


def test_implicit_ratings_add_sampled_negatives() -> None:
    cols = implicit_ratings(np.array([0, 1]), np.array([3, 4]), items=10, negatives=3, seed=0)
    assert len(cols["user"]) == 8
    assert sorted(cols["rating"].tolist()) == [0.0] * 6 + [1.0] * 2
    positives = cols["rating"] == 1.0
    assert sorted(zip(cols["user"][positives], cols["item"][positives], strict=True)) == [
        (0, 3),
        (1, 4),
    ]
    assert sorted(cols["user"][~positives].tolist()) == [0, 0, 0, 1, 1, 1]


async def test_the_recommendation_system_answers_with_the_state_before_each_event() -> None:
    seen = np.zeros((2, 6), bool)
    seen[0, 0] = True
    popularity = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    async with Node() as node:
        pid = await node.spawn(RecommendationSystem(seen, popularity))
        answers = await pid.call(("events", [(1, 0, 1), (2, 0, 2), (3, 1, 0)]))
        assert isinstance(answers, list)
        masks = [decode_request(a[0][None, :], 6)[1][0] for a in answers]
        assert [np.flatnonzero(m).tolist() for m in masks] == [[0], [0, 1], []]
        # The popularity baseline skips what the user has seen, as the model does.
        assert [a[1][:3] for a in answers] == [[1, 2, 3], [2, 3, 4], [0, 1, 2]]
        # A retried event gets the same answer, not one that already counts itself as seen.
        (again,) = await pid.call(("events", [(2, 0, 2)]))  # type: ignore[misc]
        assert np.array_equal(again[0], answers[1][0])
        pid.cast(("recommended", [(2, 0, np.arange(3, dtype=np.int32))]))
        assert await pid.call(("out_of_order",)) == 0
        await pid.call(("events", [(0, 0, 3)]))  # user 0's event 0 after their event 2
        assert await pid.call(("out_of_order",)) == 1
        latest = await pid.call(("latest", 0))
        assert isinstance(latest, np.ndarray) and latest.tolist() == [0, 1, 2]
        with pytest.raises(ProcessExited, match="unknown call"):  # let it crash
            await pid.call(("nonsense",))


async def test_the_report_scores_hits_and_ndcg_exactly() -> None:
    report = Report(asyncio.Semaphore(0))
    event = Event(0, 0, 42, 0.0, 0, 0.0)
    top = np.array([1, 42, 3], np.int32)
    assert report.recommended(event, top, popular=[42, 5], version="1")
    assert not report.recommended(event, top, popular=[42, 5], version="1")  # redelivered
    report.recommended(Event(1, 0, 9, 0.0, 0, 0.0), top, popular=[5], version="2")
    report.dropped_event("outlier")
    assert (report.scored, report.duplicates, report.ended) == (2, 1, 3)
    assert (report.hits, report.popular_hits) == (1, 1)
    assert report.ndcg == pytest.approx(1 / np.log2(3))
    assert report.popular_ndcg == pytest.approx(1.0)
    assert report.versions == {"1": 1, "2": 1} and report.dropped == {"outlier": 1}


def test_partition_by_user_agrees_before_and_after_handle_message(movielens: MovieLens) -> None:
    catalogue = Catalogue.of(movielens)
    fields = {"seq": "0", "user": "196", "item": "242", "rating": "3", "sent": "0"}
    fields["timestamp"] = str(catalogue.first_time)
    event = parse_event(fields, catalogue)
    parsed = Parsed(fields, event, features(event, catalogue))
    assert partition_by_user(Message(parsed)) == partition_by_user(Message(fields)) == 196
