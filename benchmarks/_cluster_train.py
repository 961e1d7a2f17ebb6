"""Benchmark case: data-parallel training on 2 Ray raylets against local port workers.

The same ``Trainer`` twice, same data, shards, seeds and rounds: 2 workers as Ray actors in
a ``STRICT_SPREAD`` placement group (one per raylet; ``backend="ray"``) and 2 local port
workers (the baseline, started in the same run). Workload: logistic regression on river's
Shuttle stream (39,277 training rows, 9 features; benchmarks/_train_data.py), ``local_epochs``
per round, held-out accuracy.

Lines (JSON, benchmarks/_common.py): ``rounds_per_s`` of the Ray gang against the port
workers' (medians of interleaved ``fit`` runs after both pools are up; target >= 0.8x), and
the held-out accuracy of each (the same parameters are expected: target within 1%).

A case of benchmarks/cluster.py (its ``CASES`` row ``train``, the driver connected to a
cluster with two raylets): ``python benchmarks/cluster.py --cases train [--quick]``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Settings, emit, interleaved, median, say
from _train_data import shuttle
from corral import Node
from corral.train import Trainer, load_model

BENCH = "cluster"
CASE = "train_2_raylets"
MODEL = "corral.train:LogisticRegression"


async def _fit(trainer: Trainer, rounds: int) -> tuple[float, dict[str, object]]:
    began = time.perf_counter()
    result = await trainer.fit(rounds=rounds)
    return time.perf_counter() - began, dict(result.parameters)


async def run(settings: Settings) -> None:
    """Both trainers up, then ``settings.repeats`` interleaved fits of each; emits the
    lines. Needs a connected driver (corral.cluster.connect) and two raylets."""
    train, test = shuttle()
    rounds = 5 if settings.quick else 20
    options: dict[str, object] = {
        "model": MODEL,
        "model_args": {"features": train["x"].shape[1], "lr": 0.1, "batch_size": 32},
        "workers": 2,
        "local_epochs": 1,
        "seed": 0,
    }
    async with Node():
        ports = Trainer(train, name="ports", **options)
        ray = Trainer(
            train, name="ray", backend="ray", placement_strategy="STRICT_SPREAD", **options
        )
        began = time.perf_counter()
        async with ports, ray:
            say(f"{CASE}: both pools up in {time.perf_counter() - began:.1f}s")
            runs = await interleaved(
                [lambda: _fit(ray, rounds), lambda: _fit(ports, rounds)], settings.repeats
            )
    ray_runs, port_runs = runs
    ray_rate = median([rounds / wall for wall, _ in ray_runs])
    port_rate = median([rounds / wall for wall, _ in port_runs])
    if settings.verbose:
        say(f"{CASE}: ray walls {[round(w, 3) for w, _ in ray_runs]}")
        say(f"{CASE}: port walls {[round(w, 3) for w, _ in port_runs]}")
    emit(
        bench=BENCH,
        case=f"{CASE}/throughput",
        metric="rounds_per_s",
        value=ray_rate,
        unit="rounds/s",
        baseline_name="2_port_workers",
        baseline_value=port_rate,
        loop=settings.loop,
        rounds=rounds,
        rows=len(train["y"]),
        repeats=settings.repeats,
        target_ratio=0.8,
    )
    evaluator = load_model(MODEL, options["model_args"])  # type: ignore[arg-type]
    evaluator.set_parameters(ray_runs[-1][1])  # type: ignore[arg-type]
    on_ray = evaluator.evaluate(test)["accuracy"]
    evaluator.set_parameters(port_runs[-1][1])  # type: ignore[arg-type]
    local = evaluator.evaluate(test)["accuracy"]
    emit(
        bench=BENCH,
        case=f"{CASE}/heldout",
        metric="heldout_accuracy",
        value=on_ray,
        unit="accuracy",
        baseline_name="2_port_workers",
        baseline_value=local,
        loop=settings.loop,
        rounds=rounds,
        within_1pct=abs(on_ray - local) <= 0.01 * abs(local),
    )


async def case(settings: Settings, cluster: object) -> None:
    """The row of benchmarks/cluster.py's ``CASES`` (group ``train``)."""
    await run(settings)
