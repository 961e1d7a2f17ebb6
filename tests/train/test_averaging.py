"""Weighted averaging and sharding: pure functions, exact results."""

from __future__ import annotations

import numpy as np
import pytest

from corral.train import key_shards, shard_bounds, split, weighted_average


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


def test_row_counts_average_each_row_over_the_shards_that_touched_it_exactly() -> None:
    a = {"P": np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]]), "b": np.array([0.0])}
    b = {"P": np.array([[5.0, 5.0], [6.0, 6.0], [7.0, 7.0], [8.0, 8.0]]), "b": np.array([4.0])}
    counts = [{"P": np.array([3, 0, 1, 0])}, {"P": np.array([1, 2, 0, 0])}]
    out = weighted_average([(a, 3), (b, 1)], row_counts=counts)
    # row 0: 3:1 by its counts; row 1: only b touched it; row 2: only a; row 3: nobody, so
    # the shards' 3:1 sample weights; b (no row counts): 3:1 as a whole.
    assert out["P"].tolist() == [[2.0, 2.0], [6.0, 6.0], [3.0, 3.0], [5.0, 5.0]]
    assert out["b"].tolist() == [1.0]


def test_row_counts_of_unequal_shards_3_2_1_weight_a_vector_parameter_per_entry() -> None:
    contributions = [
        ({"bu": np.array([6.0, 6.0, 1.0])}, 3),
        ({"bu": np.array([0.0, 3.0, 2.0])}, 2),
        ({"bu": np.array([12.0, 9.0, 3.0])}, 1),
    ]
    counts = [{"bu": np.array([1, 0, 2])}, {"bu": np.array([1, 1, 0])}, {"bu": np.array([1, 1, 0])}]
    assert weighted_average(contributions, row_counts=counts)["bu"].tolist() == [6.0, 6.0, 1.0]


def test_one_contribution_with_row_counts_comes_back_bit_for_bit() -> None:
    rng = np.random.default_rng(1)
    params = {"Q": rng.normal(size=(4, 3)), "bi": rng.normal(size=4)}
    counts = {"Q": np.array([0, 5, 1, 0]), "bi": np.array([0, 5, 1, 0])}
    out = weighted_average([(params, 6)], row_counts=[counts])
    for name in params:
        assert out[name].tobytes() == params[name].tobytes()


def test_row_counts_are_checked_against_the_parameters() -> None:
    one = ({"P": np.zeros((2, 2)), "mu": np.zeros(())}, 1)
    with pytest.raises(
        ValueError, match=r"row_counts needs one mapping per contribution \(2\); got 1"
    ):
        weighted_average([one, one], row_counts=[{"P": np.ones(2, np.int64)}])
    with pytest.raises(ValueError, match=r"row_counts\['P'\] must be an int array of shape \(2,\)"):
        weighted_average([one], row_counts=[{"P": np.ones(3, np.int64)}])
    with pytest.raises(ValueError, match=r"row_counts\['P'\] must be >= 0"):
        weighted_average([one], row_counts=[{"P": np.array([1, -1])}])
    with pytest.raises(ValueError, match=r"row_counts name 'mu' must be an array parameter"):
        weighted_average([one], row_counts=[{"mu": np.ones(1, np.int64)}])


def test_key_shards_keep_each_key_in_one_shard_balanced_by_rows_in_row_order() -> None:
    key = np.array([7, 3, 7, 5, 3, 7, 9, 5, 7])  # 7: 4 rows, 3: 2, 5: 2, 9: 1
    shards = key_shards(key, 2)
    assert [s.tolist() for s in shards] == [[0, 2, 5, 6, 8], [1, 3, 4, 7]]
    assert [s.tolist() for s in key_shards(key, 1)] == [list(range(9))]
    data = {"user": key, "r": np.arange(9.0)}
    assert [s["r"].tolist() for s in split(data, 2, by="user")] == [
        [0.0, 2.0, 5.0, 6.0, 8.0],
        [1.0, 3.0, 4.0, 7.0],
    ]
    with pytest.raises(ValueError, match="4 distinct shard_by keys cannot fill 5 worker shards"):
        key_shards(key, 5)
