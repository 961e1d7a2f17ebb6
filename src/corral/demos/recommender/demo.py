"""``corral demo``: train, serve and replay a MovieLens recommender, end to end.

1. Load MovieLens 100K from the installed recbole package; sort by time; the first
   ``train_fraction`` of ratings is history, the rest is the live stream.
2. Train implicit matrix factorization with ``corral.train`` (``workers`` port processes,
   weighted averaging each round), with a progress bar.
3. Start a node: a ``Serving`` of the model on ``partitions`` port partitions, the
   ``RecommendationSystem`` process, and the ``RecommenderPipeline`` reading the stream from
   memory or a Redis stream.
4. Replay the stream with at most ``window`` events in flight (a closed-loop load
   generator: latency is from the event entering the source to its recommendation
   reaching the client), score every recommendation against the item the user rated next,
   and the popularity baseline the same way.
5. Print the table. ``chaos`` SIGKILLs a model worker every ``chaos_interval`` seconds;
   ``swap`` trains v2 before the replay (v1 plus ``swap_rounds`` rounds on the history and
   the first third of the stream: the demo knows its stream in advance) and hot-swaps it in
   when a third of the events have ended, under full load; the feed waits at two thirds
   for a swap still in progress, so v1 and v2 both serve. The run fails (``lost`` > 0) if
   any valid event got no recommendation.

SIGINT and SIGTERM stop a run cleanly (``cleanup.interrupts``): the pipeline and serving
stop, the stream and temporary directory are removed, a line says so, and
``DemoInterrupted`` (a ``SystemExit``: 130 or 143) is raised. Each run first removes what
killed runs left (``cleanup``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import signal
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from corral import telemetry
from corral._progress import ProgressBar
from corral.demos.recommender.cleanup import (
    DemoInterrupted,
    interrupts,
    make_directory,
    remove_stale_directories,
    remove_stale_streams,
    stream_name,
    topic_name,
)
from corral.demos.recommender.data import LICENCE, MovieLens, load_movielens
from corral.demos.recommender.model import encode_request, implicit_ratings, load, save
from corral.demos.recommender.stream import (
    Catalogue,
    DemoContext,
    RecommendationSystem,
    RecommenderPipeline,
    Report,
    make_events,
    partition_by_user,
)
from corral.errors import SwapFailed
from corral.pipeline.message import Message
from corral.runtime import ChildSpec, Node
from corral.serving import Serving
from corral.train import Trainer
from corral.train.trainer import ROUND_EVENT

__all__ = ["DemoOptions", "DemoResult", "run_recommender_demo"]


@dataclass(frozen=True)
class DemoOptions:
    """What ``corral demo`` runs; every field is a command-line option."""

    events: int | None = None  # replay only the first N stream ratings (None: all)
    workers: int = 4
    rounds: int = 8
    factors: int = 32
    negatives: int = 8
    lr: float = 0.1
    partitions: int = 2
    processors: int = 2
    batchers: int = 4
    batch_size: int = 64
    window: int = 256
    chaos: bool = False
    chaos_interval: float = 2.0
    swap: bool = False
    swap_rounds: int = 2
    rate: float = 0.0  # events/s the source offers; 0: as fast as the pipeline takes them
    source: str = "memory"
    train_fraction: float = 0.8
    bad_every: int = 100
    seed: int = 0

    def check(self) -> None:
        """``ValueError`` naming the first option out of range."""
        positive = {
            "workers": self.workers,
            "rounds": self.rounds,
            "factors": self.factors,
            "partitions": self.partitions,
            "processors": self.processors,
            "batchers": self.batchers,
            "batch_size": self.batch_size,
            "window": self.window,
            "swap_rounds": self.swap_rounds,
        }
        for name, value in positive.items():
            if type(value) is not int or value < 1:
                raise ValueError(f"--{name} must be an int >= 1; got {value!r}")
        if self.events is not None and (type(self.events) is not int or self.events < 100):
            raise ValueError(f"--events must be an int >= 100; got {self.events!r}")
        if self.negatives < 0:
            raise ValueError(f"--negatives must be >= 0; got {self.negatives!r}")
        if self.bad_every < 0:
            raise ValueError(f"--bad-every must be >= 0; got {self.bad_every!r}")
        if not self.rate >= 0:
            raise ValueError(f"--rate must be >= 0; got {self.rate!r}")
        if not self.chaos_interval > 0:
            raise ValueError(f"--chaos-interval must be > 0; got {self.chaos_interval!r}")
        if not 0.1 <= self.train_fraction <= 0.95:
            raise ValueError(f"--train-fraction must be in [0.1, 0.95]; got {self.train_fraction}")
        if self.source != "memory" and not self.source.startswith(
            ("redis://", "unix://", "kafka://")
        ):
            raise ValueError(
                "--source must be 'memory', a redis://host:port/db URL or a kafka://host:port "
                f"URL; got {self.source!r}"
            )


@dataclass
class DemoResult:
    """What the demo measured (the table's figures)."""

    trained_on: int
    stream: int  # events replayed, injected bad ones included
    valid: int
    scored: int
    dropped: dict[str, int]
    failed: list[str]
    hit_rate: float
    ndcg: float
    popular_hit_rate: float
    popular_ndcg: float
    events_per_second: float
    latency_p50: float
    latency_p99: float
    train_seconds: float
    versions: dict[str, int]
    kills: int = 0
    retried_batches: int = 0
    swap_at: int | None = None
    duplicates: int = 0
    out_of_order: int = 0  # events the RecommendationSystem saw after a later one of their user
    example: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.valid - self.scored


@dataclass(frozen=True)
class _Run:
    """What every step of one demo run shares."""

    data: MovieLens
    cut: int  # ratings [0, cut) are history
    stop: int  # ratings [cut, stop) are the stream
    options: DemoOptions
    directory: Path  # model files, checkpoints, shards
    out: TextIO


Source = tuple[dict[str, object], Callable[[list[dict[str, str]]], Awaitable[None]]]


def _checkpoint(directory: Path, name: str) -> Path:
    return directory / f"{name}-checkpoint.npz"


async def _train(
    run: _Run, stop: int, name: str, *, start_from: Path | None = None
) -> tuple[Path, float]:
    """Train on ratings ``[0, stop)``: ``options.rounds`` rounds from scratch, or
    ``options.swap_rounds`` more rounds from the checkpoint ``start_from``. Writes the
    serving's model file and this run's checkpoint; returns (model file, seconds)."""
    data, options, directory = run.data, run.options, run.directory
    columns = implicit_ratings(
        data.user[:stop],
        data.item[:stop],
        items=data.items,
        negatives=options.negatives,
        seed=options.seed,
    )
    model_args = {
        "users": data.users,
        "items": data.items,
        "factors": options.factors,
        "lr": options.lr,
        "l2": 0.01,
        "batch_size": 256,
        "global_mean": 1.0 / (1 + options.negatives),
        "seed": options.seed,
    }
    checkpoint = _checkpoint(directory, name)
    rounds = options.rounds
    if start_from is not None:  # resume: the trainer goes on from the round it finds there
        shutil.copyfile(start_from, checkpoint)
        rounds += options.swap_rounds
    started = time.monotonic()
    todo = options.rounds if start_from is None else options.swap_rounds
    bar = ProgressBar(todo, label=f"training {name}", stream=run.out)

    def on_round(_e: object, measurements: object, metadata: object, _c: object) -> None:
        assert isinstance(measurements, dict) and isinstance(metadata, dict)
        if metadata.get("trainer") == name:
            bar.update(1, loss=measurements["loss"])

    handler_id = f"corral-demo-{name}-{uuid.uuid4().hex}"
    telemetry.attach(handler_id, ROUND_EVENT, on_round)
    try:
        async with Trainer(
            columns,
            model="corral.train:MatrixFactorization",
            model_args=model_args,
            workers=options.workers,
            local_epochs=1,
            seed=options.seed,
            name=name,
            checkpoint=str(checkpoint),
            data_dir=str(directory / f"{name}-shards"),
        ) as trainer:
            result = await trainer.fit(rounds=rounds)
    finally:
        telemetry.detach(handler_id)
        bar.close()
    known = np.zeros(data.users, bool)
    known[data.user[:stop]] = True
    path = directory / f"{name}.npz"
    save(path, result.parameters, known)
    return path, time.monotonic() - started


class _Ledger:
    """The memory source's acknowledger: every event must end exactly once."""

    def __init__(self) -> None:
        self.ended: dict[int, str] = {}
        self.twice: list[int] = []

    def ack(self, successful: Sequence[Message], failed: Sequence[Message]) -> None:
        for outcome, messages in (("ok", successful), ("failed", failed)):
            for message in messages:
                seq = int(str(message.metadata["seq"]))
                if seq in self.ended:
                    self.twice.append(seq)
                self.ended[seq] = outcome


@contextlib.asynccontextmanager
async def _source(
    options: DemoOptions, ledger: _Ledger, out: TextIO, cleaned: list[str]
) -> AsyncIterator[Source]:
    """(producer options, push(events)) for memory or a Redis stream the demo feeds; the
    stream is deleted at the end (named in ``cleaned``), stale ones of killed runs first."""
    if options.source == "memory":
        from corral.pipeline.producers.memory import MemoryQueue

        queue = MemoryQueue(max_size=4 * options.window, name="movielens")

        async def push_memory(events: list[dict[str, str]]) -> None:
            for event in events:
                await queue.push([event], metadata={"seq": event["seq"]}, acknowledger=ledger)

        memory: dict[str, object] = {"module": "memory", "options": {"queue": queue}}
        yield memory, push_memory
        return
    if options.source.startswith("kafka://"):
        async with _kafka_source(options, cleaned) as kafka:
            yield kafka
        return
    from corral.pipeline.producers.redis_writer import StreamWriter

    stream = stream_name()
    async with StreamWriter(options.source, stream) as writer:
        for stale in await remove_stale_streams(writer):
            print(
                f"  removed stream {stale} left by a run that ended without cleaning up", file=out
            )

        async def push_redis(events: list[dict[str, str]]) -> None:
            await writer.add(events)

        producer: dict[str, object] = {
            "module": "redis_streams",
            "options": {
                "url": options.source,
                "stream": stream,
                "group": "corral-demo",
                "block": 0.05,
                "on_failure": "ack",
            },
        }
        try:
            yield producer, push_redis
        finally:
            with contextlib.suppress(Exception):
                await writer.delete()
                cleaned.append(f"stream {stream}")


@contextlib.asynccontextmanager
async def _kafka_source(options: DemoOptions, cleaned: list[str]) -> AsyncIterator[Source]:
    """A new topic (one partition per processor) the demo feeds with JSON events keyed by
    user, read back through a consumer group; the topic is deleted at the end."""
    from corral.pipeline.producers.kafka import KafkaWriter

    topic = topic_name()
    async with KafkaWriter(options.source, topic, partitions=options.processors) as writer:

        async def push_kafka(events: list[dict[str, str]]) -> None:
            await writer.send(
                [json.dumps(e).encode() for e in events], [e["user"].encode() for e in events]
            )

        producer: dict[str, object] = {
            "module": "kafka",
            "options": {
                "url": options.source,
                "topics": [topic],
                "group": f"{topic}-group",
                "fetch_timeout": 0.05,
                "commit_interval": 0.2,
            },
        }
        try:
            yield producer, push_kafka
        finally:
            with contextlib.suppress(Exception):
                await writer.delete_topic()
                cleaned.append(f"topic {topic}")


def _source_name(source: str) -> str:
    if source == "memory":
        return "memory"
    return "a Kafka topic" if source.startswith("kafka://") else "a Redis stream"


def _example(report: Report, data: MovieLens) -> str | None:
    """One hit, in words: what a user rated and where it stood in their recommendations."""
    if report.example is None:
        return None
    event, top = report.example

    def title(item: int) -> str:
        year = data.years[item]
        return f"'{data.titles[item]}'" + (f" ({year})" if year else "")

    rank = top.index(event.item) + 1
    others = ", ".join(title(i) for i in top[:4] if i != event.item)
    return (
        f"user {data.user_ids[event.user]} rated {title(event.item)}; it was #{rank} of the "
        f"10 recommended to them just before, beside {others}"
    )


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def run_recommender_demo(
    options: DemoOptions | None = None, *, out: TextIO | None = None
) -> DemoResult:
    """Run the demo (see the module doc); prints progress and the table to ``out``."""
    options = options or DemoOptions()
    options.check()
    out = out or sys.stdout
    print("corral demo: a real-time recommender on MovieLens 100K", file=out)
    print(
        textwrap.fill(f"data: {LICENCE}", width=96, initial_indent="  ", subsequent_indent="    "),
        file=out,
    )
    data = load_movielens()
    cut = data.cut(options.train_fraction)
    stop = len(data) if options.events is None else min(len(data), cut + options.events)
    summary = (
        f"{len(data):,} ratings by {data.users} users of {data.items} movies; training on the "
        f"first {cut:,} by time, replaying the next {stop - cut:,} as a live stream"
    )
    print(textwrap.fill(summary, width=96, initial_indent="  ", subsequent_indent="    "), file=out)
    for stale_dir in remove_stale_directories():
        print(f"  removed {stale_dir}, left by a run that ended without cleaning up", file=out)
    task = asyncio.current_task()
    assert task is not None
    cleaned: list[str] = []
    with interrupts(task) as caught:
        try:
            return await _run(options, out, data, cut, stop, cleaned)
        except asyncio.CancelledError:
            if not caught:
                raise
            task.uncancel()
        name = signal.Signals(caught[0]).name
        what = ", ".join(cleaned) or "nothing to remove"
        print(f"\ncorral demo: interrupted by {name}; stopped and removed {what}", file=out)
        raise DemoInterrupted(caught[0])


async def _run(
    options: DemoOptions, out: TextIO, data: MovieLens, cut: int, stop: int, cleaned: list[str]
) -> DemoResult:
    ledger = _Ledger()
    directory = make_directory()
    try:
        # The source first: a Redis URL that does not answer fails before any training.
        async with _source(options, ledger, out, cleaned) as source, Node() as node:
            run = _Run(data, cut, stop, options, directory, out)
            model_path, train_seconds = await _train(run, cut, "v1")
            v2 = None
            if options.swap:
                newer = cut + (stop - cut) // 3
                v2 = await _train(run, newer, "v2", start_from=_checkpoint(directory, "v1"))
            return await _replay(run, node, source, ledger, (model_path, train_seconds), v2)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        cleaned.append(f"directory {directory}")


async def _replay(
    run: _Run,
    node: Node,
    source: Source,
    ledger: _Ledger,
    v1: tuple[Path, float],
    v2: tuple[Path, float] | None,
) -> DemoResult:
    data, cut, stop, options, out = run.data, run.cut, run.stop, run.options, run.out
    producer, push = source
    model_path, train_seconds = v1
    catalogue = Catalogue.of(data)
    seen = np.zeros((data.users, data.items), bool)
    seen[data.user[:cut], data.item[:cut]] = True
    popularity = np.bincount(data.item[:cut], minlength=data.items).astype(np.float64)
    events = make_events(data, cut, stop, bad_every=options.bad_every, seed=options.seed)
    valid = stop - cut
    window = asyncio.Semaphore(options.window)
    report = Report(window, swap_at=len(events) // 3)
    serving = Serving(
        functools.partial(load, str(model_path)),
        name="model",
        kind="port",
        partitions=options.partitions,
        batch_size=64,
        batch_timeout=0.002,
        version="1",
        # One BLAS thread per worker: the partitions share the cores, and small matrix
        # products lose more to OpenBLAS's thread hand-offs than they gain (3x here).
        port_options=(("env", {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}),),
    )
    await serving.start(node)
    # Supervised: a crash restarts it from the history (what users saw before the stream).
    await node.start_child(
        ChildSpec(
            id="recommendation_system",
            start=lambda: RecommendationSystem(seen.copy(), popularity),
            name="recommendation_system",
        )
    )
    kills = 0
    swap_at: int | None = None
    notes: list[str] = []
    pipeline = RecommenderPipeline(
        name="events",
        producer=producer,
        processors={"default": {"concurrency": options.processors}},
        batchers={
            "recommend": {
                "batch_size": options.batch_size,
                "batch_timeout": 0.005,
                "concurrency": options.batchers,
            }
        },
        partition_by=partition_by_user,
        retry={"max_attempts": 5, "backoff": {"initial": 0.05, "max": 1.0}},
        context=DemoContext(catalogue, node, serving, report),
    )
    await pipeline.start(node)
    where = _source_name(options.source)
    print(f"  replaying {len(events):,} events from {where}", file=out, flush=True)
    bar = ProgressBar(len(events), label="replaying", stream=out)
    started = time.monotonic()
    swapped = asyncio.Event()
    hold_at = 2 * len(events) // 3 if options.swap else len(events)
    waited = 0.0

    async def feed() -> None:
        nonlocal waited
        chunk = 8
        for start in range(0, len(events), chunk):
            if start >= hold_at and not swapped.is_set():  # v1 and v2 must both serve
                began = time.monotonic()
                await swapped.wait()
                waited += time.monotonic() - began
            if options.rate:
                await asyncio.sleep(started + start / options.rate - time.monotonic())
            part = events[start : start + chunk]
            for _ in part:
                await window.acquire()
            now = repr(time.monotonic())
            for event in part:
                event["sent"] = now
            await push(part)
            done = report.ended
            bar.update(done - bar.count, events_per_s=done / (time.monotonic() - started))

    async def chaos() -> None:
        nonlocal kills
        victim = 0
        while True:
            await asyncio.sleep(options.chaos_interval)
            parts = serving.statistics().partitions
            os_pid = parts[victim % len(parts)].os_pid
            victim += 1
            if os_pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(os_pid, signal.SIGKILL)
                    kills += 1

    async def swap() -> None:
        nonlocal swap_at
        assert v2 is not None
        path, seconds = v2
        try:
            await report.swap_due.wait()  # a third of the events have ended
            triggered = report.ended
            sample = encode_request(0, np.zeros(data.items, bool))
            try:
                await serving.swap(functools.partial(load, str(path)), version="2", warmup=sample)
            except SwapFailed as exc:
                notes.append(f"swap failed and was rolled back; v1 kept serving: {exc}")
                return
        finally:
            swapped.set()
        swap_at = report.ended
        notes.append(
            f"swap: v2 (v1 + {options.swap_rounds} rounds on {cut + (stop - cut) // 3:,} "
            f"ratings: history + the first third of the stream, {seconds:.1f} s) swapped in "
            f"at event {triggered:,}, took over after event {swap_at:,} of {len(events):,}"
        )

    extra = []
    if options.chaos:
        extra.append(asyncio.create_task(chaos()))
    swapping = asyncio.create_task(swap()) if options.swap else None
    try:
        await feed()
        for _ in range(options.window):  # every event in flight has ended
            await window.acquire()
        elapsed = time.monotonic() - started - waited
        if waited:
            notes.append(f"the feed waited {waited:.1f} s at two thirds for the swap to finish")
        if swapping is not None:
            await swapping
    finally:
        for task in extra:
            task.cancel()
        if swapping is not None and not swapping.done():
            swapping.cancel()
        await asyncio.gather(*extra, return_exceptions=True)
    bar.update(len(events) - bar.count)
    bar.close()
    stats = serving.statistics()
    await pipeline.stop()
    out_of_order = await node.lookup("recommendation_system").call(("out_of_order",))
    assert isinstance(out_of_order, int)
    if options.source == "memory":  # the source's own view: every event ended exactly once
        if ledger.twice:
            notes.append(f"acknowledged twice: {len(ledger.twice)} events")
        if len(ledger.ended) != len(events):
            notes.append(f"never acknowledged: {len(events) - len(ledger.ended)} events")
    scored = max(report.scored, 1)
    return DemoResult(
        trained_on=cut,
        stream=len(events),
        valid=valid,
        scored=report.scored,
        dropped=dict(report.dropped),
        failed=list(report.failed),
        hit_rate=report.hits / scored,
        ndcg=report.ndcg / scored,
        popular_hit_rate=report.popular_hits / scored,
        popular_ndcg=report.popular_ndcg / scored,
        events_per_second=len(events) / elapsed,
        latency_p50=_percentile(report.latencies, 50),
        latency_p99=_percentile(report.latencies, 99),
        train_seconds=train_seconds,
        versions=dict(report.versions),
        kills=kills,
        retried_batches=stats.retried_batches,
        swap_at=swap_at,
        duplicates=report.duplicates,
        out_of_order=out_of_order,
        example=_example(report, data),
        notes=notes,
    )
