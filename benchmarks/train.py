"""Benchmark: averaged data-parallel training (corral.train) against single-process training.

Cases, on real data shipped in packages (see benchmarks/_train_data.py):

* ``movielens_mf``: matrix factorization on MovieLens 100K, held-out RMSE;
* ``shuttle_logreg``: logistic regression on river's Shuttle stream, held-out accuracy.

For each: the held-out metric after the same number of epochs with 1, 2 and 4 workers
(baseline: single-process ``train_locally``; target within 1% relative), samples/s with 2
workers against 1 worker, and the wall time and metric of a 2-worker run in which one
worker is SIGKILLed mid-run (baseline: the same run without the kill; target: costs at most
one round's time). Output: JSON lines as in benchmarks/_common.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, loop_factory, parse_settings, say
from _train_data import movielens_100k, shuttle
from corral import Node, telemetry
from corral.train import ROUND_EVENT, Trainer, load_model, train_locally

BENCH = "train"


async def _distributed(
    case: dict[str, object], workers: int, rounds: int, kill_at: int | None = None
) -> tuple[float, float, int, float]:
    """(metric, wall seconds, samples processed, mean round seconds) of one run."""
    metric = str(case["metric"])
    async with (
        Node(),
        Trainer(
            case["train"],
            eval_data=None,
            model=case["model"],
            model_args=case["args"],
            workers=workers,
            port_options={"spares": 1},
        ) as trainer,
    ):
        pids = await trainer.worker_os_pids()

        def kill(_e: object, m: dict[str, float], _md: object, _c: object) -> None:
            # Kill the last worker 30% into round kill_at (rounds take about as long).
            if kill_at is not None and m["round"] == kill_at - 1:
                delay = 0.3 * m["duration"]
                asyncio.get_running_loop().call_later(delay, os.kill, pids[-1], signal.SIGKILL)

        telemetry.attach("bench-kill", ROUND_EVENT, kill)
        try:
            began = time.perf_counter()
            result = await trainer.fit(rounds=rounds)
            wall = time.perf_counter() - began
        finally:
            telemetry.detach("bench-kill")
        value = trainer.evaluate(result.parameters, case["test"])[metric]  # type: ignore[arg-type]
        samples = sum(s.samples for s in result.history)
        restarts = sum(s.restarts for s in result.history)
        if kill_at is not None:
            say(f"  kill run: {restarts} restart(s)")
        return value, wall, samples, wall / max(1, rounds)


def _single(case: dict[str, object], rounds: int) -> tuple[float, float]:
    model = load_model(str(case["model"]), case["args"])  # type: ignore[arg-type]
    began = time.perf_counter()
    params = train_locally(model, case["train"], rounds=rounds)  # type: ignore[arg-type]
    wall = time.perf_counter() - began
    model.set_parameters(params)
    return model.evaluate(case["test"])[str(case["metric"])], wall  # type: ignore[arg-type]


async def _run_case(name: str, case: dict[str, object], rounds: int, loop: str) -> None:
    metric = str(case["metric"])
    lower = metric == "rmse"
    single, single_wall = _single(case, rounds)
    say(f"{name}: single-process {metric}={single:.4f} in {single_wall:.2f}s")
    walls: dict[int, tuple[float, int, float]] = {}
    for workers in (1, 2, 4):
        value, wall, samples, per_round = await _distributed(case, workers, rounds)
        walls[workers] = (wall, samples, per_round)
        say(f"{name}: {workers} worker(s) {metric}={value:.4f} in {wall:.2f}s")
        emit(
            bench=BENCH,
            case=f"{name}/{workers}_workers",
            metric=f"heldout_{metric}",
            value=value,
            unit=metric,
            baseline_name="single_process",
            baseline_value=single,
            loop=loop,
            epochs=rounds,
            lower_is_better=lower,
            within_1pct=abs(value - single) <= 0.01 * abs(single),
        )
    rate = {w: walls[w][1] / walls[w][0] for w in (1, 2)}
    emit(
        bench=BENCH,
        case=f"{name}/throughput",
        metric="samples_per_s_2_workers",
        value=rate[2],
        unit="samples/s",
        baseline_name="1_worker",
        baseline_value=rate[1],
        loop=loop,
        cores=os.cpu_count(),
    )
    kill_at = max(1, rounds // 2)
    value, wall, samples, _ = await _distributed(case, 2, rounds, kill_at=kill_at)
    clean_wall, _, per_round = walls[2]
    emit(
        bench=BENCH,
        case=f"{name}/sigkill_1_of_2",
        metric="wall_s",
        value=wall,
        unit="s",
        baseline_name="2_workers_no_kill",
        baseline_value=clean_wall,
        loop=loop,
        lower_is_better=True,
        extra_s=wall - clean_wall,
        round_s=per_round,
        within_one_round=wall - clean_wall <= per_round,
        samples_per_s=samples / wall,
    )
    emit(
        bench=BENCH,
        case=f"{name}/sigkill_1_of_2",
        metric=f"heldout_{metric}",
        value=value,
        unit=metric,
        baseline_name="single_process",
        baseline_value=single,
        loop=loop,
        lower_is_better=lower,
        within_1pct=abs(value - single) <= 0.01 * abs(single),
    )


def main() -> None:
    settings = parse_settings(__doc__ or "")
    ml_train, ml_test, users, items = movielens_100k()
    sh_train, sh_test = shuttle()
    cases = {
        "movielens_mf": {
            "model": "corral.train:MatrixFactorization",
            "metric": "rmse",
            "args": {
                "users": users,
                "items": items,
                "factors": 16,
                "lr": 0.02,
                "l2": 0.05,
                "batch_size": 64,
                "global_mean": float(ml_train["rating"].mean()),
            },
            "train": ml_train,
            "test": ml_test,
            "rounds": 15 if settings.quick else 40,
        },
        "shuttle_logreg": {
            "model": "corral.train:LogisticRegression",
            "metric": "accuracy",
            "args": {"features": sh_train["x"].shape[1], "lr": 0.1, "batch_size": 32},
            "train": sh_train,
            "test": sh_test,
            "rounds": 6 if settings.quick else 20,
        },
    }

    async def run_all() -> None:
        for name, case in cases.items():
            await _run_case(name, case, int(case["rounds"]), settings.loop)  # type: ignore[call-overload]

    with asyncio.Runner(loop_factory=loop_factory(settings.loop)) as runner:
        runner.run(run_all())


if __name__ == "__main__":
    main()
