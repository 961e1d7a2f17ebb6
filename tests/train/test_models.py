"""The numpy models, plain single-process training and option validation."""

from __future__ import annotations

import numpy as np
import pytest

from corral.train import (
    LinearRegression,
    LogisticRegression,
    MatrixFactorization,
    Model,
    Trainer,
    TrainerOptions,
    load_model,
    train_locally,
)


def test_linear_regression_learns_the_seeds_x_at_w_plus_b(
    regression: dict[str, np.ndarray],
) -> None:
    model = LinearRegression(4, lr=0.05, seed=1)
    params = train_locally(model, regression, rounds=30, seed=3)
    np.testing.assert_allclose(params["w"], [1.0, -2.0, 0.5, 3.0], atol=0.05)
    model.set_parameters(params)
    assert model.evaluate(regression)["rmse"] < 0.15


def test_plain_training_is_deterministic_for_a_seed(regression: dict[str, np.ndarray]) -> None:
    one = train_locally(LinearRegression(4, seed=1), regression, rounds=3, seed=9)
    two = train_locally(LinearRegression(4, seed=1), regression, rounds=3, seed=9)
    other = train_locally(LinearRegression(4, seed=1), regression, rounds=3, seed=10)
    assert one["w"].tobytes() == two["w"].tobytes()
    assert one["w"].tobytes() != other["w"].tobytes()


def test_logistic_regression_separates_two_classes() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    y = (x[:, 0] + x[:, 1] > 0).astype(np.float64)
    model = LogisticRegression(2, lr=0.5, momentum=0.5)
    model.set_parameters(
        train_locally(model, {"x": x, "y": y}, rounds=10, average_optimizer_state=True)
    )
    assert model.evaluate({"x": x, "y": y})["accuracy"] > 0.97
    assert set(model.get_optimizer_state()) == {"w", "b"}


def test_matrix_factorization_fits_a_low_rank_rating_matrix() -> None:
    rng = np.random.default_rng(0)
    users, items = 30, 20
    truth = rng.normal(size=(users, 2)) @ rng.normal(size=(2, items)) + 3.0
    u, i = np.meshgrid(np.arange(users), np.arange(items), indexing="ij")
    data = {"user": u.ravel(), "item": i.ravel(), "rating": truth.ravel()}
    model = MatrixFactorization(users, items, factors=4, lr=0.05, l2=0.0, global_mean=3.0)
    before = model.evaluate(data)["rmse"]
    model.set_parameters(train_locally(model, data, rounds=60))
    assert model.evaluate(data)["rmse"] < 0.2 * before


def test_the_provided_models_follow_the_protocol() -> None:
    for model in (LinearRegression(2), LogisticRegression(2), MatrixFactorization(2, 2)):
        assert isinstance(model, Model)
    assert isinstance(load_model("corral.train:LinearRegression", {"features": 3}), Model)


def test_models_reject_bad_hyperparameters_and_parameters_naming_them() -> None:
    with pytest.raises(ValueError, match=r"model LinearRegression: lr must be a number > 0; got 0"):
        LinearRegression(2, lr=0)
    with pytest.raises(ValueError, match=r"features must be an int >= 1; got 0"):
        LogisticRegression(0)
    with pytest.raises(ValueError, match=r"factors must be an int >= 1; got -1"):
        MatrixFactorization(3, 3, factors=-1)
    with pytest.raises(ValueError, match=r"parameters 'w' must have shape \(2,\); got \(3,\)"):
        LinearRegression(2).set_parameters({"w": np.zeros(3), "b": np.zeros(1)})
    with pytest.raises(TypeError, match="it must have get_parameters"):
        load_model("collections:OrderedDict", {})
    with pytest.raises(ValueError, match="must be a str like 'module:Class'"):
        load_model("nocolon")


def test_trainer_options_are_validated_at_construction_naming_the_option(
    regression: dict[str, np.ndarray],
) -> None:
    model = "corral.train:LinearRegression"
    with pytest.raises(
        ValueError,
        match=r"^invalid options for trainer 'trainer': workers must be an int "
        r">= 1; got 0$",
    ):
        Trainer(regression, model=model, model_args={"features": 4}, workers=0)
    with pytest.raises(ValueError, match="model must be a str like 'module:Class'; got 'x'"):
        TrainerOptions(model="x")
    with pytest.raises(ValueError, match=r"local_epochs must be an int >= 1; got 1\.5"):
        TrainerOptions(model=model, local_epochs=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="round_timeout must be a number > 0 or None; got 0"):
        TrainerOptions(model=model, round_timeout=0)
    with pytest.raises(ValueError, match=r"unknown option 'trainer\.worker'; valid options:"):
        TrainerOptions.from_mapping({"model": model, "worker": 2}, path="trainer.")
    with pytest.raises(ValueError, match="workers must be at most the data's 203 rows; got 500"):
        Trainer(regression, model=model, model_args={"features": 4}, workers=500)
