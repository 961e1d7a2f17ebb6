"""Weighted averaging and sharding: pure functions, exact results."""

from __future__ import annotations

import numpy as np
import pytest

from corral.train import shard_bounds, split, weighted_average


def test_weighted_average_weights_by_sample_counts_exactly() -> None:
    a = {"w": np.array([1.0, 2.0]), "b": np.array([0.0])}
    b = {"w": np.array([4.0, 8.0]), "b": np.array([3.0])}
    out = weighted_average([(a, 1), (b, 3)])
    np.testing.assert_array_equal(out["w"], [3.25, 6.5])
    np.testing.assert_array_equal(out["b"], [2.25])


def test_unequal_shards_3_2_1_average_to_the_sample_weighted_mean() -> None:
    contributions = [
        ({"p": np.array([6.0])}, 3),
        ({"p": np.array([0.0])}, 2),
        ({"p": np.array([12.0])}, 1),
    ]
    assert weighted_average(contributions)["p"].tolist() == [5.0]


def test_one_contribution_comes_back_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(5, 3)), "b": rng.normal(size=3)}
    out = weighted_average([(params, 17)])
    for name in params:
        assert out[name].tobytes() == params[name].tobytes()


def test_equal_parameters_average_to_themselves_and_dtypes_are_kept() -> None:
    params = {"w": np.array([0.1, 0.7], dtype=np.float32)}
    out = weighted_average([(params, 2), (params, 5)])
    assert out["w"].dtype == np.float32
    np.testing.assert_allclose(out["w"], params["w"], rtol=1e-7)


def test_weighted_average_rejects_bad_input_with_the_rule() -> None:
    with pytest.raises(ValueError, match="needs at least one contribution"):
        weighted_average([])
    with pytest.raises(ValueError, match=r"sample counts must be ints >= 1; got 0"):
        weighted_average([({"w": np.zeros(1)}, 0)])
    with pytest.raises(ValueError, match=r"must have the names \['w'\]; got \['v'\]"):
        weighted_average([({"w": np.zeros(1)}, 1), ({"v": np.zeros(1)}, 1)])
    with pytest.raises(ValueError, match=r"'w' must have shape \(1,\) in every"):
        weighted_average([({"w": np.zeros(1)}, 1), ({"w": np.zeros(2)}, 1)])


def test_shards_are_contiguous_and_the_first_ones_take_the_remainder() -> None:
    assert shard_bounds(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]
    data = {"x": np.arange(10)}
    assert [s["x"].tolist() for s in split(data, 3)] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    with pytest.raises(ValueError, match="3 rows cannot fill 4 worker shards"):
        shard_bounds(3, 4)
