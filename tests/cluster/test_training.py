"""Training on Ray: workers as actors on the session's two raylets (``backend="ray"``).

Real Ray actors; the crash is a real SIGKILL of a worker actor's process, by its own model
in the middle of a round. Real time: Ray's own clocks run.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ray_cluster import RayCluster

from corral import Node, RestartIntensityExceeded
from corral.cluster import live_actors
from corral.cluster.training import RayWorkers
from corral.train import Trainer, TrainingFailed
from corral.train.cli import add_parser, run

pytestmark = pytest.mark.realtime

LINEAR = "corral.train:LinearRegression"
ARGS = {"features": 4, "lr": 0.05, "seed": 1}


@pytest.fixture
def regression() -> dict[str, np.ndarray]:
    """203 rows of y = x @ w + 0.5 + noise over 4 features (unequal shards)."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(203, 4))
    y = x @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.5 + rng.normal(0, 0.1, 203)
    return {"x": x, "y": y}


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)


def _train_workers() -> list[str]:
    return [name for name in live_actors() if name.startswith("TrainWorker-")]


async def _until(check: Any, what: str, bound: float = 60.0) -> None:
    deadline = time.monotonic() + bound
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {bound:g} s: {what}")
        await asyncio.sleep(0.01)  # polling for another process's progress


async def _died(ref: Any) -> None:
    import ray

    with pytest.raises(ray.exceptions.RayActorError):
        await ref


async def test_training_on_two_raylets_matches_local_port_workers_and_leaves_no_actors(
    ray_cluster: RayCluster, regression: dict[str, np.ndarray]
) -> None:
    options: dict[str, Any] = {"model": LINEAR, "model_args": ARGS, "workers": 2, "seed": 3}
    async with Node(), Trainer(regression, eval_data=regression, **options) as local:
        expected = await local.fit(rounds=5)
    ray_options = {**options, "backend": "ray", "placement_strategy": "STRICT_SPREAD"}
    async with Node(), Trainer(regression, eval_data=regression, **ray_options) as trainer:
        pool = trainer.pool
        assert isinstance(pool, RayWorkers)
        assert sorted(await pool.node_ids()) == sorted([ray_cluster.head, ray_cluster.worker])
        assert len(_train_workers()) == 2
        watches = [h.corral_watch.remote() for h in pool.handles()]  # type: ignore[attr-defined]
        result = await trainer.fit(rounds=5)
    local_rmse = expected.history[-1].metrics["rmse"]
    assert result.history[-1].metrics["rmse"] == pytest.approx(local_rmse, rel=0.01)
    assert _same(result.parameters, expected.parameters)
    assert [s.restarts for s in result.history] == [0] * 5
    for watch in watches:
        await _died(watch)
    assert _train_workers() == []


async def test_a_worker_actor_killed_mid_round_makes_the_gang_rerun_that_round(
    ray_cluster: RayCluster, regression: dict[str, np.ndarray], tmp_path: Path
) -> None:
    options: dict[str, Any] = {"workers": 2, "seed": 4}
    async with Node(), Trainer(regression, model=LINEAR, model_args=ARGS, **options) as t:
        clean = await t.fit(rounds=3)  # local port workers: the same result, faster to get
    options["backend"] = "ray"
    crash_args = {**ARGS, "flag": str(tmp_path / "killed"), "crash_on": 2}
    model = "train_models:CrashingLinear"
    async with Node(), Trainer(regression, model=model, model_args=crash_args, **options) as t:
        before = await t.pool.os_pids()
        result = await t.fit(rounds=3)
        after = await t.pool.os_pids()
    assert (tmp_path / "killed").exists()
    assert [s.restarts for s in result.history] == [0, 1, 0]
    assert set(before).isdisjoint(after)  # one_for_all: the whole gang was re-created
    assert _same(result.parameters, clean.parameters)


async def test_a_worker_on_a_removed_node_is_recreated_elsewhere_and_its_round_rerun(
    ray_cluster: RayCluster, regression: dict[str, np.ndarray], tmp_path: Path
) -> None:
    options: dict[str, Any] = {"workers": 3, "seed": 6}
    async with Node(), Trainer(regression, model=LINEAR, model_args=ARGS, **options) as t:
        clean = await t.fit(rounds=3)
    doomed = ray_cluster.add_worker(num_cpus=2)
    removed = False
    try:
        flag = tmp_path / "stalled"
        model_args = {**ARGS, "node": doomed.node_id, "flag": str(flag)}
        model = "cluster_train_models:StallingLinear"
        # SPREAD over three nodes with room on each: one worker per node, one on `doomed`.
        options.update(backend="ray", placement_strategy="SPREAD")
        async with Node(), Trainer(regression, model=model, model_args=model_args, **options) as t:
            assert doomed.node_id in await t.pool.node_ids()
            fit = asyncio.create_task(t.fit(rounds=3))
            await _until(flag.exists, "the worker on the doomed node is in round 1")
            ray_cluster.remove_worker(doomed)
            removed = True
            result = await fit
            assert doomed.node_id not in await t.pool.node_ids()
    finally:
        if not removed:
            ray_cluster.remove_worker(doomed)
    assert [s.restarts for s in result.history] == [0, 1, 0]
    assert _same(result.parameters, clean.parameters)


async def test_a_worker_that_keeps_dying_fails_the_run_once_intensity_is_exceeded(
    ray_cluster: RayCluster, regression: dict[str, np.ndarray], tmp_path: Path
) -> None:
    crash_args = {**ARGS, "flag": str(tmp_path / "killed"), "crash_on": 1, "always": True}
    options: dict[str, Any] = {"workers": 1, "backend": "ray", "max_restarts": 0}
    model = "train_models:CrashingLinear"
    async with Node(), Trainer(regression, model=model, model_args=crash_args, **options) as t:
        with pytest.raises(TrainingFailed) as info:
            await t.fit(rounds=2)
    assert info.value.round == 0
    assert isinstance(info.value.reason, RestartIntensityExceeded)


async def test_a_model_that_raises_on_ray_fails_the_run_with_its_error(
    ray_cluster: RayCluster, regression: dict[str, np.ndarray]
) -> None:
    model = "train_models:Raising"
    async with (
        Node(),
        Trainer(regression, model=model, model_args=ARGS, workers=1, backend="ray") as t,
    ):
        with pytest.raises(TrainingFailed) as info:
            await t.fit(rounds=1)
    assert "model bug" in str(info.value)


def test_ray_options_are_checked_at_construction(regression: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError) as info:
        Trainer(regression, model=LINEAR, model_args=ARGS, backend="rays")
    assert str(info.value) == (
        "invalid options for trainer 'trainer': backend must be 'ports' or 'ray'; got 'rays'"
    )
    with pytest.raises(ValueError) as info:
        Trainer(regression, model=LINEAR, model_args=ARGS, backend="ray", num_cpus=0)
    assert "num_cpus must be a number > 0; got 0" in str(info.value)
    with pytest.raises(ValueError) as info:
        Trainer(regression, model=LINEAR, backend="ray", port_options={"spares": 1})
    assert str(info.value) == (
        "invalid options for trainer 'trainer': port_options is only used with "
        "backend='ports'; backend is 'ray'"
    )


def test_corral_train_with_ray_trains_on_the_cluster_as_it_does_locally(
    ray_cluster: RayCluster, regression: dict[str, np.ndarray], tmp_path: Path
) -> None:
    data = tmp_path / "train.npz"
    np.savez(data, x=regression["x"], y=regression["y"])
    parser = argparse.ArgumentParser(prog="corral")
    add_parser(parser.add_subparsers(dest="command", required=True))
    argv = ["train", "linear", "--data", str(data), "--rounds", "2", "--quiet", "--workers", "1"]
    local, on_ray = tmp_path / "local.npz", tmp_path / "ray.npz"
    assert run(parser.parse_args([*argv, "--out", str(local)])) == 0
    ray_argv = [*argv, "--out", str(on_ray), "--ray", ray_cluster.address, "--num-cpus", "0.5"]
    assert run(parser.parse_args(ray_argv)) == 0
    with np.load(local) as a, np.load(on_ray) as b:
        assert sorted(a.files) == sorted(b.files) == ["b", "w"]
        assert all(a[k].tobytes() == b[k].tobytes() for k in a.files)
