"""Benchmark: averaged data-parallel training (corral.train) against single-process training.

Cases, on real data shipped in packages (see benchmarks/_train_data.py):

* ``movielens_mf``: matrix factorization on MovieLens 100K, held-out RMSE;
* ``shuttle_logreg``: logistic regression on river's Shuttle stream, held-out accuracy;
* ``shuttle_torch_mlp``: a small torch MLP (``TorchModel``, one torch thread per worker) on
  the same data, held-out accuracy.

For each: the held-out metric after the same number of epochs with 1, 2 and 4 workers
(baseline: single-process ``train_locally``; target within 1% relative; MovieLens is
sharded by item, so each item's rows are trained by one worker), samples/s with 2
workers against 1 worker (medians of interleaved runs; target >= 1.6x for the MLP on 2
cores), and the wall time and metric of a 2-worker run in which one worker is SIGKILLed 30%
into a round (baseline: the same run without the kill, interleaved; both with a warm spare
per worker and rounds of several local epochs; target: costs at most one round's time,
reported as ``cost_rounds``; the line also carries both runs' samples/s). Timing starts
after the workers (and spares) are up.

Each case starts one worker pool per worker count once (all at once, after the
single-process baseline) and every run of that count reuses it: a ``fit`` starts from the
initial parameters and seeds each time (the trainer has no eval data or checkpoint, and
the metric is computed on a separate model), so only start-up is saved. The kill case runs
on the 2-worker pool with ``local_epochs`` switched to ``kill_epochs``. ``--quick``
(< 60 s on 2 cores): MovieLens 15 epochs at l2=0.05 (full: 40 epochs at l2=0.1; each is
near single-process training's best held-out RMSE at that length), fewer epochs and
repeats elsewhere, and no 4-worker MLP pool (a torch worker costs ~4.5 s of CPU to start).
Output: JSON lines as in benchmarks/_common.py.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np

from _common import emit, loop_factory, median, parse_settings
from _common import say as _say
from _train_data import movielens_100k, shuttle
from corral import Node, telemetry
from corral.train import ROUND_EVENT, Model, Trainer, load_model, train_locally

BENCH = "train"
_T0 = time.perf_counter()


def say(message: str) -> None:
    """A progress line on stderr, stamped with the seconds since the benchmark started."""
    _say(f"[{time.perf_counter() - _T0:5.1f}s] {message}")


@dataclass(frozen=True)
class Run:
    """One distributed run: held-out metric, wall seconds of ``fit``, samples processed,
    rounds and restarts."""

    metric: float
    wall: float
    samples: int
    rounds: int
    restarts: int

    @property
    def rate(self) -> float:
        return self.samples / self.wall

    @property
    def round_s(self) -> float:
        return self.wall / max(1, self.rounds)


async def _start(name: str, case: dict[str, object], workers: int, spares: int) -> Trainer:
    """A started trainer (its worker pool up) for ``workers``; reused by every run of the
    case with that many workers, so worker start-up (torch: seconds each) is paid once."""
    trainer = Trainer(
        case["train"],  # type: ignore[arg-type]
        eval_data=None,
        name=f"{name}-{workers}",
        model=case["model"],
        model_args=case["args"],
        workers=workers,
        shard_by=case.get("shard_by"),
        port_options={"spares": spares},
    )
    try:
        await trainer.start()
    except BaseException:
        await trainer.aclose()
        raise
    return trainer


async def _fit(
    trainer: Trainer,
    case: dict[str, object],
    evaluator: Model,
    rounds: int,
    *,
    local_epochs: int = 1,
    kill_at: int | None = None,
) -> Run:
    """One ``fit`` from the initial parameters (the trainer has no eval data and no
    checkpoint, so every fit starts afresh from the same parameters and seeds). Timing
    starts once every worker's spare is warm, so spares starting up do not compete with
    training for the CPUs. The held-out metric is computed on ``evaluator``, not the
    trainer's own model, which stays at the initial parameters."""
    if trainer.options.local_epochs != local_epochs:
        trainer.options = replace(trainer.options, local_epochs=local_epochs)
    await trainer.wait_spares()
    pids = await trainer.worker_os_pids()

    def kill(_e: object, m: dict[str, float], _md: object, _c: object) -> None:
        # Kill the last worker 30% into round kill_at (rounds take about as long).
        if kill_at is not None and m["round"] == kill_at - 1:
            delay = 0.3 * m["duration"]
            asyncio.get_running_loop().call_later(delay, os.kill, pids[-1], signal.SIGKILL)

    telemetry.attach("bench-kill", ROUND_EVENT, kill)
    try:
        gc.collect()
        began = time.perf_counter()
        result = await trainer.fit(rounds=rounds)
        wall = time.perf_counter() - began
    finally:
        telemetry.detach("bench-kill")
    evaluator.set_parameters(result.parameters)
    value = evaluator.evaluate(case["test"])[str(case["metric"])]  # type: ignore[arg-type]
    samples = sum(s.samples for s in result.history)
    restarts = sum(s.restarts for s in result.history)
    return Run(value, wall, samples, rounds, restarts)


def _single(case: dict[str, object], rounds: int) -> tuple[float, float]:
    model = load_model(str(case["model"]), case["args"])  # type: ignore[arg-type]
    began = time.perf_counter()
    params = train_locally(model, case["train"], rounds=rounds)  # type: ignore[arg-type]
    wall = time.perf_counter() - began
    model.set_parameters(params)
    return model.evaluate(case["test"])[str(case["metric"])], wall  # type: ignore[arg-type]


def _metric_line(
    name: str,
    case: dict[str, object],
    label: str,
    value: float,
    baseline_value: float,
    loop: str,
    baseline: str = "single_process",
    epochs: object = None,
) -> None:
    metric = str(case["metric"])
    emit(
        bench=BENCH,
        case=f"{name}/{label}",
        metric=f"heldout_{metric}",
        value=value,
        unit=metric,
        baseline_name=baseline,
        baseline_value=baseline_value,
        loop=loop,
        epochs=case["rounds"] if epochs is None else epochs,
        lower_is_better=metric == "rmse",
        within_1pct=abs(value - baseline_value) <= 0.01 * abs(baseline_value),
    )


async def _run_case(name: str, case: dict[str, object], repeats: int, loop: str) -> None:
    """Train the single-process baseline, start one worker pool per worker count (all at
    once), then: the held-out metric with each count, samples/s with 1 and 2
    workers (``repeats`` interleaved runs), and the kill case on the 2-worker pool (which
    has a warm spare per worker when the case has one). Every run reuses its pool."""
    metric, rounds = str(case["metric"]), int(case["rounds"])  # type: ignore[call-overload]
    counts: tuple[int, ...] = case.get("workers", (1, 2, 4))  # type: ignore[assignment]
    kill_rounds = int(case.get("kill_rounds", 0))  # type: ignore[call-overload]
    evaluator = load_model(str(case["model"]), case["args"])  # type: ignore[arg-type]
    single, single_wall = _single(case, rounds)
    began = time.perf_counter()
    starts = [
        asyncio.create_task(_start(name, case, w, 1 if w == 2 and kill_rounds else 0))
        for w in counts
    ]
    try:
        trainers = dict(zip(counts, await asyncio.gather(*starts), strict=True))
    except BaseException:
        for task in starts:
            task.cancel()
        ok = [t.result() for t in starts if t.done() and not t.cancelled() and not t.exception()]
        await asyncio.gather(*(t.aclose() for t in ok), return_exceptions=True)
        raise
    say(
        f"{name}: single-process {metric}={single:.4f} in {single_wall:.2f}s; "
        f"pools for {counts} workers up in {time.perf_counter() - began:.2f}s"
    )
    try:
        rates: dict[int, list[float]] = {1: [], 2: []}
        for workers in counts:
            run = await _fit(trainers[workers], case, evaluator, rounds)
            if workers in rates:
                rates[workers].append(run.rate)
            say(f"{name}: {workers} worker(s) {metric}={run.metric:.4f} in {run.wall:.2f}s")
            _metric_line(name, case, f"{workers}_workers", run.metric, single, loop)
        for w in [w for w in counts if w not in rates]:  # idle: free its memory now
            await trainers.pop(w).aclose()
        for r in range(repeats - 1):  # more throughput samples, 1 and 2 workers interleaved
            for workers in (1, 2) if r % 2 else (2, 1):
                run = await _fit(trainers[workers], case, evaluator, rounds)
                rates[workers].append(run.rate)
        say(f"{name}: samples/s 1 worker {rates[1]}, 2 workers {rates[2]}")
        emit(
            bench=BENCH,
            case=f"{name}/throughput",
            metric="samples_per_s_2_workers",
            value=median(rates[2]),
            unit="samples/s",
            baseline_name="1_worker",
            baseline_value=median(rates[1]),
            loop=loop,
            cores=os.cpu_count(),
            repeats=repeats,
            target_ratio=1.6,
        )
        if kill_rounds:
            await trainers.pop(1).aclose()
            await _kill_case(name, case, trainers[2], evaluator, loop)
    finally:
        await asyncio.gather(*(t.aclose() for t in trainers.values()))


async def _kill_case(
    name: str, case: dict[str, object], trainer: Trainer, evaluator: Model, loop: str
) -> None:
    """2 workers with warm spares, rounds of ``kill_epochs`` local epochs; clean and
    killed runs interleaved, medians. The kill cost in rounds is extra wall / clean round."""
    rounds, epochs = int(case["kill_rounds"]), int(case["kill_epochs"])  # type: ignore[call-overload]
    repeats = int(case["kill_repeats"])  # type: ignore[call-overload]
    kill_at = rounds // 2
    clean: list[Run] = []
    killed: list[Run] = []
    for _ in range(repeats):
        clean.append(await _fit(trainer, case, evaluator, rounds, local_epochs=epochs))
        killed.append(
            await _fit(trainer, case, evaluator, rounds, local_epochs=epochs, kill_at=kill_at)
        )
    wall, clean_wall = median([r.wall for r in killed]), median([r.wall for r in clean])
    round_s = median([r.round_s for r in clean])
    extra = wall - clean_wall
    say(f"{name}: kill walls {[r.wall for r in killed]}, clean {[r.wall for r in clean]}")
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
        local_epochs=epochs,
        rounds=rounds,
        restarts=[r.restarts for r in killed],
        extra_s=extra,
        round_s=round_s,
        cost_rounds=extra / round_s,
        within_one_round=extra <= round_s,
        samples_per_s=median([r.rate for r in killed]),
        baseline_samples_per_s=median([r.rate for r in clean]),
        repeats=repeats,
    )
    # Same schedule as the clean runs (kill_rounds x kill_epochs), so that is the baseline.
    value, clean_value = median([r.metric for r in killed]), median([r.metric for r in clean])
    _metric_line(
        name,
        case,
        "sigkill_1_of_2",
        value,
        clean_value,
        loop,
        "2_workers_no_kill",
        epochs * rounds,
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
                # Tuned so single-process training is near its best held-out RMSE at the
                # case's epochs (same for every worker count): l2=0.05 peaks at 10-15
                # epochs (0.917-0.919) and overfits by 40 (0.944); l2=0.1 reaches 0.910 at
                # 32 epochs and is flat to 40 (0.913); at 15 epochs it is still 0.920.
                "l2": 0.05 if settings.quick else 0.1,
                "batch_size": 64,
                "global_mean": float(ml_train["rating"].mean()),
            },
            # Each item's ratings on one worker, and P/Q/bu/bi averaged row by row
            # (MatrixFactorization.row_counts): a rare item keeps its whole update instead
            # of a 1/workers share of it (4 workers: 2.6% -> 0.6% from single-process).
            "shard_by": "item",
            "train": ml_train,
            "test": ml_test,
            "rounds": 15 if settings.quick else 40,
            "kill_rounds": 4,
            "kill_epochs": 6,  # ~0.4 s rounds on 2 workers: long against a restart
        },
        "shuttle_logreg": {
            "model": "corral.train:LogisticRegression",
            "metric": "accuracy",
            "args": {"features": sh_train["x"].shape[1], "lr": 0.1, "batch_size": 32},
            "train": sh_train,
            "test": sh_test,
            "rounds": 6 if settings.quick else 20,
            "kill_rounds": 4,
            "kill_epochs": 8,
        },
        "shuttle_torch_mlp": {
            "model": "corral.train.torch_model:TorchModel",
            "metric": "accuracy",
            "args": {
                "module": "corral.train.torch_model:mlp",
                "module_args": {"inputs": sh_train["x"].shape[1], "hidden": 32, "outputs": 2},
                "lr": 0.05,
                "batch_size": 32,
                "threads": 1,  # one intra-op thread per worker: N workers on N cores
            },
            "train": {"x": sh_train["x"].astype(np.float32), "y": sh_train["y"]},
            "test": {"x": sh_test["x"].astype(np.float32), "y": sh_test["y"]},
            "rounds": 2 if settings.quick else 10,
            "kill_rounds": 3 if settings.quick else 4,
            "kill_epochs": 1,
            "repeats": 2 if settings.quick else 5,
            # A torch worker costs ~4.5 s of CPU to start (torch and torch._dynamo
            # imports; 5 in the quick MLP case with the spares): --quick skips the
            # 4-worker pool to stay under 60 s.
            "workers": (1, 2) if settings.quick else (1, 2, 4),
        },
    }

    async def run_all() -> None:
        for name, case in cases.items():
            repeats = int(case.get("repeats", 1 if settings.quick else 3))  # type: ignore[call-overload]
            case.setdefault("kill_repeats", 1 if settings.quick else 3)
            async with Node():
                await _run_case(name, case, repeats, settings.loop)
            say(f"{name}: done")

    say("data loaded")
    with asyncio.Runner(loop_factory=loop_factory(settings.loop)) as runner:
        runner.run(run_all())
    say("train: done")


if __name__ == "__main__":
    main()
