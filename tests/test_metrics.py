"""corral.metrics: known traffic in, exact counter values out, read back through
prometheus-client's own text parser."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from corral import KILL, Actor, ChildSpec, Node, Supervisor, metrics, telemetry
from corral._extras import MissingExtra
from corral.errors import InvalidInput, ServingOverloaded
from corral.pipeline import Message, Pipeline
from corral.pipeline.testing import push
from corral.serving import AsyncFunctionModel, Serving
from corral.testing import Gate, wait_all_tasks_blocked
from corral.train import Trainer

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

TESTS = Path(__file__).resolve().parent


def scrape(m: metrics.Metrics) -> Samples:
    """Every sample of ``m``'s registry, keyed by (name, sorted labels)."""
    return parse(m.exposition().decode())


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@contextmanager
def attached() -> Iterator[metrics.Metrics]:
    m = metrics.attach(CollectorRegistry())
    try:
        yield m
    finally:
        m.close()
    assert not [h for h in telemetry.list_handlers() if h.handler_id == m.handler_id]


class Gated:
    """Async models held at ``gate``; output ``x * factor``."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.gate = Gate()

    def __call__(self) -> AsyncFunctionModel:
        return AsyncFunctionModel(self.run)

    async def run(self, batch: np.ndarray) -> np.ndarray:
        await self.gate.enter()
        return batch * self.factor


def sample(i: float) -> np.ndarray:
    return np.array([i, i], dtype=np.float32)


async def test_serving_traffic_requests_swap_and_restarts_are_counted_exactly() -> None:
    v1, v2 = Gated(2.0), Gated(3.0)
    v1.gate.open()
    serving = Serving(
        v1, name="rank", batch_size=2, batch_timeout=0.1, max_queue=2, input_spec=((2,), "float32")
    )
    with attached() as m:
        async with Node([serving.child_spec()]):
            m.watch(serving)
            # 5 completed on version 1: batches 2 + 2 + 1 (the last one cut by its timeout).
            for chunk in ([0, 1], [2, 3], [4]):
                await asyncio.gather(*(serving.run(sample(i)) for i in chunk))
            with pytest.raises(InvalidInput):
                await serving.run(np.zeros(3, dtype=np.float32))
            # 2 killed partitions, each restarted by the partitions supervisor.
            for _ in range(2):
                serving.partition_pids()[0].exit(KILL)
                await wait_all_tasks_blocked()
            await serving.swap(v2, version="2")
            # Version 2: one batch held at its gate, 2 queued (max_queue), the 5th refused.
            held = [asyncio.create_task(serving.run(sample(i))) for i in range(5)]
            await v2.gate.wait_blocked()
            await wait_all_tasks_blocked()
            samples = scrape(m)
            assert value(samples, "corral_serving_queue_length", serving="rank") == 2
            assert value(samples, "corral_serving_partitions_up", serving="rank") == 1
            # The last 10 s (virtual time): the batches of 2, 2 and 1, no padding.
            bucket = {"serving": "rank", "bucket": "all"}
            assert value(samples, "corral_serving_bucket_mean_batch_size", **bucket) == 5 / 3
            assert value(samples, "corral_serving_bucket_samples_per_second", **bucket) == 0.5
            assert value(samples, "corral_serving_bucket_padding_ratio", **bucket) == 0.0
            with pytest.raises(ServingOverloaded):
                await held[4]
            v2.gate.open()
            await asyncio.gather(*held[:4])
            samples = scrape(m)
    requests = "corral_serving_requests_total"
    assert value(samples, requests, serving="rank", version="1", outcome="completed") == 5
    assert value(samples, requests, serving="rank", version="1", outcome="invalid") == 1
    assert value(samples, requests, serving="rank", version="2", outcome="completed") == 4
    assert value(samples, requests, serving="rank", version="2", outcome="overloaded") == 1
    outcomes = {labels for (name, labels) in samples if name == requests}
    assert len(outcomes) == 4
    assert value(samples, "corral_serving_swaps_total", serving="rank", outcome="swapped") == 1
    # Batches: [0,1] [2,3] [4] on v1, [0,1] [2,3] on v2.
    assert value(samples, "corral_serving_batch_size_count", serving="rank") == 5
    assert value(samples, "corral_serving_batch_size_sum", serving="rank") == 9
    assert value(samples, "corral_serving_batch_size_bucket", serving="rank", le="1.0") == 1
    duration = "corral_serving_request_duration_seconds"
    assert value(samples, duration + "_count", serving="rank") == 5
    # Virtual time: only the batch of one waited, its whole batch_timeout.
    assert value(samples, duration + "_sum", serving="rank") == pytest.approx(0.1)
    restarts = {
        labels: v
        for (name, labels), v in samples.items()
        if name == "corral_supervisor_restarts_total"
    }
    assert restarts == {(("child", "partition-0"), ("supervisor", "rank/partitions-v1")): 2}


class Crasher(Actor):
    def handle_cast(self, msg: object) -> None:
        raise RuntimeError(f"crash {msg}")


async def test_crashes_and_restarts_are_counted_per_supervisor_and_child() -> None:
    spec = ChildSpec(id="crasher", start=Crasher, name="crasher")
    with attached() as m:
        async with Node([spec], name="n") as node:
            for i in range(3):
                pid = node.whereis("crasher")
                assert pid is not None
                pid.cast(i)
                await wait_all_tasks_blocked()
            samples = scrape(m)
    assert value(samples, "corral_process_crashes_total") == 3
    restarts = {
        labels: v
        for (name, labels), v in samples.items()
        if name == "corral_supervisor_restarts_total"
    }
    assert list(restarts.values()) == [3]
    # An unnamed supervisor is labelled by its kind, never by its pid (unbounded).
    assert list(restarts) == [(("child", "crasher"), ("supervisor", "Supervisor"))]


class Picky(Pipeline):
    """Odd numbers fail (marked), multiples of 5 raise; the rest go to the batcher."""

    def handle_message(self, processor: str, message: Message, context: object) -> Message:
        n = message.data
        assert isinstance(n, int)
        if n % 5 == 0 and n:
            raise ValueError(f"no {n}")
        if n % 2:
            return message.mark_failed(f"odd {n}")
        return message.put_batcher("default")

    def handle_batch(
        self, batcher: str, messages: list[Message], batch_info: object, context: object
    ) -> list[Message]:
        return [m if m.data != 4 else m.mark_failed("four") for m in messages]


async def test_a_pipeline_run_counts_messages_per_stage_and_outcome() -> None:
    pipeline = Picky(
        name="picky",
        producer={"module": "memory", "options": {}},
        batchers={"default": {"batch_size": 2}},
    )
    with attached() as m:
        async with Node() as node:
            await pipeline.start(node)
            try:
                # 0..11: 1 3 7 9 11 marked, 5 10 raise; 0 2 4 6 8 batched, 4 fails there.
                successful, failed = await push(pipeline, range(12)).wait_acked()
            finally:
                await pipeline.stop()
        samples = scrape(m)
    assert sorted(msg.data for msg in successful) == [0, 2, 6, 8]
    assert len(failed) == 8
    messages = "corral_pipeline_messages_total"
    processor = {"pipeline": "picky", "stage": "processor.default"}
    batcher = {"pipeline": "picky", "stage": "batcher.default"}
    assert value(samples, messages, **processor, outcome="successful") == 5
    assert value(samples, messages, **processor, outcome="failed") == 7
    assert value(samples, messages, **batcher, outcome="successful") == 4
    assert value(samples, messages, **batcher, outcome="failed") == 1
    duration = "corral_pipeline_batch_duration_seconds_count"
    assert value(samples, duration, pipeline="picky", batcher="default") == 3  # 2 + 2 + 1


def test_label_sets_stay_bounded_and_detach_stops_counting() -> None:
    with attached() as m:
        for n in range(50):
            telemetry.emit(
                ("corral", "port", "worker_exited"), {}, {"reason": "signal", "os_pid": n}
            )
        telemetry.emit(("corral", "train", "round"), {"loss": 0.5, "round": 0}, {"trainer": "t"})
        telemetry.emit(("corral", "train", "round"), {"loss": 0.25, "round": 1}, {"trainer": "t"})
        m.detach()
        telemetry.emit(("corral", "port", "worker_exited"), {}, {"reason": "signal"})
        samples = scrape(m)
    exits = [k for k in samples if k[0] == "corral_port_worker_exits_total"]
    assert exits == [("corral_port_worker_exits_total", (("reason", "signal"),))]
    assert value(samples, "corral_port_worker_exits_total", reason="signal") == 50
    assert value(samples, "corral_train_rounds_total", trainer="t") == 2
    assert value(samples, "corral_train_loss", trainer="t") == 0.25


def test_one_metrics_per_registry_and_a_clear_error_for_a_second() -> None:
    registry = CollectorRegistry()
    first = metrics.attach(registry)
    try:
        with pytest.raises(ValueError, match="registry already holds corral's metrics"):
            metrics.attach(registry)
    finally:
        first.close()
    metrics.attach(registry).close()  # closed, the registry takes a new one


@pytest.mark.realtime
async def test_serve_answers_a_scrape_from_its_own_thread_with_the_servings_gauges() -> None:
    model = Gated(2.0)
    model.gate.open()
    serving = Serving(model, name="rank", batch_size=2, batch_timeout=0.01)
    with attached() as m:
        async with Node([serving.child_spec()]):
            m.watch(serving)
            await asyncio.gather(*(serving.run(sample(i)) for i in range(3)))
            server = metrics.serve(0, metrics=m)
            try:
                assert server.host == "127.0.0.1"
                url = f"http://127.0.0.1:{server.port}/metrics"
                # The scrape's thread reads the serving on the loop: keep the loop free.
                text = await asyncio.to_thread(
                    lambda: urllib.request.urlopen(url, timeout=5).read().decode()
                )
            finally:
                server.close()
    samples = parse(text)
    requests = "corral_serving_requests_total"
    assert value(samples, requests, serving="rank", version="1", outcome="completed") == 3
    assert value(samples, "corral_serving_partitions_up", serving="rank") == 1
    assert value(samples, "corral_serving_queue_length", serving="rank") == 0


@pytest.mark.realtime
async def test_port_worker_exits_are_counted_by_reason() -> None:
    env = {"PYTHONPATH": str(TESTS / "gateway")}
    serving = Serving(
        "gateway_models:double", name="double", kind="port", port_options={"env": env, "spares": 0}
    )
    with attached() as m:
        async with Node([serving.child_spec()]) as node:
            x = np.ones((2,), dtype=np.float32)
            await serving.run(x)
            os_pid = serving.statistics().partitions[0].os_pid
            assert os_pid is not None
            (old,) = serving.partition_pids()
            (sup,) = [p for p in node.processes() if p.label == "double/partitions-v1"]
            os.kill(os_pid, signal.SIGKILL)
            await Supervisor.wait_restarted(sup, "partition-0", old, timeout=60.0)
            await serving.run(x)
        samples = scrape(m)
    exits = "corral_port_worker_exits_total"
    assert value(samples, exits, reason="signal") == 1
    assert value(samples, exits, reason="stopped") == 1  # the node's stop
    assert value(samples, "corral_serving_requests_total", serving="double", version="1",
                 outcome="completed") == 2  # fmt: skip


@pytest.mark.realtime
async def test_training_rounds_are_counted_with_the_last_loss() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 4))
    data = {"x": x, "y": x @ np.array([1.0, -2.0, 0.5, 3.0])}
    args = {"features": 4, "lr": 0.05, "seed": 1}
    with attached() as m:
        async with (
            Node(),
            Trainer(data, model="corral.train:LinearRegression", model_args=args, workers=1) as t,
        ):
            result = await t.fit(rounds=3)
        samples = scrape(m)
    assert value(samples, "corral_train_rounds_total", trainer=t.name) == 3
    loss = value(samples, "corral_train_loss", trainer=t.name)
    assert loss == result.history[-1].loss


def test_without_prometheus_client_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(MissingExtra) as caught:
        metrics.attach()
    assert (
        str(caught.value) == "corral.metrics needs prometheus_client: pip install 'corral[metrics]'"
    )
    assert caught.value.extra == "metrics"
