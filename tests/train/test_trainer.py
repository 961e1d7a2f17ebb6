"""The trainer with real worker processes: equivalence, crashes, resume, telemetry."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from corral import Node, RestartIntensityExceeded, telemetry
from corral.errors import PortCallError
from corral.train import (
    ROUND_EVENT,
    LinearRegression,
    Trainer,
    TrainingFailed,
    checkpoint,
    train_locally,
)

pytestmark = pytest.mark.realtime

LINEAR = "corral.train:LinearRegression"
ARGS = {"features": 4, "lr": 0.05, "seed": 1}


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)


async def test_one_worker_equals_plain_training_bit_for_bit(
    regression: dict[str, np.ndarray],
) -> None:
    expected = train_locally(LinearRegression(**ARGS), regression, rounds=3, local_epochs=2, seed=5)
    async with (
        Node(),
        Trainer(
            regression, model=LINEAR, model_args=ARGS, workers=1, local_epochs=2, seed=5
        ) as trainer,
    ):
        result = await trainer.fit(rounds=3)
    assert result.rounds == 3
    assert _same(result.parameters, expected)


async def test_four_workers_on_unequal_shards_converge_and_report_each_round(
    regression: dict[str, np.ndarray],
) -> None:
    seen: list[dict[str, float]] = []
    telemetry.attach("t", ROUND_EVENT, lambda _e, m, _md, _c: seen.append(dict(m)))
    try:
        async with (
            Node(),
            Trainer(
                regression, eval_data=regression, model=LINEAR, model_args=ARGS, workers=4
            ) as trainer,
        ):
            result = await trainer.fit(rounds=40)
    finally:
        telemetry.detach("t")
    assert [m["round"] for m in seen] == list(range(40))
    assert all(m["samples"] == 203 and m["restarts"] == 0 for m in seen)
    assert result.history[-1].metrics["rmse"] < 0.15
    assert seen[-1]["eval_rmse"] == result.history[-1].metrics["rmse"]


async def test_a_worker_sigkilled_mid_round_is_restarted_and_the_result_is_unchanged(
    regression: dict[str, np.ndarray],
    worker_env: dict[str, str],
    tmp_path: Path,
) -> None:
    options = {"workers": 2, "seed": 4, "port_options": {"env": worker_env, "spares": 0}}
    async with Node(), Trainer(regression, model=LINEAR, model_args=ARGS, **options) as t:
        clean = await t.fit(rounds=4)
    crash_args = {**ARGS, "flag": str(tmp_path / "killed"), "crash_on": 2}
    async with (
        Node(),
        Trainer(
            regression,
            eval_data=regression,
            model="train_models:CrashingLinear",
            model_args=crash_args,
            **options,
        ) as trainer,
    ):
        result = await trainer.fit(rounds=4)
    assert (tmp_path / "killed").exists()
    assert [s.restarts for s in result.history] == [0, 1, 0, 0]
    assert _same(result.parameters, clean.parameters)


async def test_a_worker_that_keeps_dying_fails_the_run_once_intensity_is_exceeded(
    regression: dict[str, np.ndarray],
    worker_env: dict[str, str],
    tmp_path: Path,
) -> None:
    crash_args = {**ARGS, "flag": str(tmp_path / "killed"), "crash_on": 1, "always": True}
    async with Node():
        trainer = Trainer(
            regression,
            model="train_models:CrashingLinear",
            model_args=crash_args,
            workers=1,
            max_restarts=2,
            max_seconds=60.0,
            name="crashy",
            port_options={"env": worker_env, "spares": 0},
        )
        async with trainer:
            with pytest.raises(TrainingFailed) as info:
                await trainer.fit(rounds=3)
    error = info.value
    assert (error.round, error.worker) == (0, 0)
    assert isinstance(error.reason, RestartIntensityExceeded)
    assert str(error).startswith("trainer 'crashy': round 0, worker 0 failed: ")
    assert "more than 2 restarts within 60 s" in str(error)


async def test_a_model_that_raises_fails_the_run_with_the_remote_error(
    regression: dict[str, np.ndarray],
    worker_env: dict[str, str],
) -> None:
    async with (
        Node(),
        Trainer(
            regression,
            model="train_models:Raising",
            model_args={"features": 4},
            workers=2,
            port_options={"env": worker_env, "spares": 0},
        ) as trainer,
    ):
        with pytest.raises(TrainingFailed) as info:
            await trainer.fit(rounds=1)
    assert isinstance(info.value.reason, PortCallError)
    assert info.value.reason.remote_message == "model bug"


async def test_resuming_from_the_checkpoint_gives_the_uninterrupted_runs_parameters(
    regression: dict[str, np.ndarray],
    tmp_path: Path,
) -> None:
    options = {"model": LINEAR, "model_args": ARGS, "workers": 2, "seed": 8}
    async with Node(), Trainer(regression, **options) as trainer:
        uninterrupted = await trainer.fit(rounds=5)
    path = str(tmp_path / "ckpt.npz")
    async with Node(), Trainer(regression, checkpoint=path, **options) as trainer:
        first = await trainer.fit(rounds=2)
    saved = checkpoint.load(path)
    assert saved is not None and saved.round == 1
    assert _same(saved.parameters, first.parameters)
    async with Node(), Trainer(regression, checkpoint=path, **options) as trainer:
        resumed = await trainer.fit(rounds=5)
    assert [s.round for s in resumed.history] == [2, 3, 4]
    assert resumed.rounds == 5
    assert _same(resumed.parameters, uninterrupted.parameters)


async def test_a_killed_worker_is_replaced_by_adopting_its_warm_spare(
    regression: dict[str, np.ndarray],
) -> None:
    options = {"workers": 2, "port_options": {"spares": 1}}
    async with Node(), Trainer(regression, model=LINEAR, model_args=ARGS, **options) as trainer:
        spares = await trainer.wait_spares()
        before = await trainer.worker_os_pids()
        assert [len(s) for s in spares] == [1, 1]
        assert not set(before) & {pid for s in spares for pid in s}
        os.kill(before[1], signal.SIGKILL)
        result = await trainer.fit(rounds=1)
        after = await trainer.worker_os_pids()
    assert [s.restarts for s in result.history] == [1]
    assert after == [before[0], spares[1][0]]


async def test_wait_spares_without_spares_returns_no_pids(
    regression: dict[str, np.ndarray],
) -> None:
    options = {"workers": 2, "port_options": {"spares": 0}}
    async with Node(), Trainer(regression, model=LINEAR, model_args=ARGS, **options) as trainer:
        assert await trainer.wait_spares() == [[], []]
