"""Structured requests and outputs (dicts and tuples of arrays), sequence buckets, hooks and
the thread budget, compared with direct calls of the same model."""

from __future__ import annotations

import asyncio
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serving_models import pair_outputs, thread_env, two_outputs

from corral import Node
from corral.errors import InvalidInput
from corral.serving import AsyncFunctionModel, InputSpec, Serving
from corral.serving.options import ServingOptions, thread_budget
from corral.testing import Gate, wait_all_tasks_blocked

HERE = str(Path(__file__).resolve().parent)


def port_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": f"{HERE}{os.pathsep}{path}" if path else HERE}


def tokens(n: int, start: int = 1) -> dict[str, np.ndarray]:
    return {
        "input_ids": np.arange(start, start + n, dtype=np.int64),
        "attention_mask": np.ones(n, np.int64),
    }


async def run_all(serving: Serving, xs: list[Any]) -> list[Any]:
    async with Node([serving.child_spec()]):
        results = await asyncio.gather(*[serving.run(x) for x in xs])
    return [r.output for r in results]


# -- dicts and tuples, through every partition kind ------------------------------------------


@pytest.mark.parametrize("kind", ["thread", "loop"])
@pytest.mark.parametrize("requests", [1, 2, 3, 5])
async def test_dict_requests_batch_field_by_field_and_dict_outputs_split_per_request(
    kind: str, requests: int
) -> None:
    # 2 outputs: batches of 2 requests are the case a tuple-of-arrays mix-up would hide.
    direct = two_outputs()
    xs = [tokens(4, start=10 * i) for i in range(requests)]
    serving = Serving(two_outputs, name="fields", kind=kind, batch_size=8, batch_timeout=0.001)
    outputs = await run_all(serving, xs)
    for x, out in zip(xs, outputs, strict=True):
        alone = direct({k: v[None] for k, v in x.items()})
        assert isinstance(alone, dict) and sorted(out) == ["tokens", "total"]
        assert out["tokens"].tolist() == alone["tokens"][0].tolist()
        assert out["total"].tolist() == alone["total"][0].tolist()


@pytest.mark.parametrize("requests", [1, 2, 3])
async def test_tuple_requests_and_tuple_outputs(requests: int) -> None:
    xs = [(np.full(3, i, np.float32), np.full(3, i + 1, np.float32)) for i in range(requests)]
    serving = Serving(pair_outputs, name="pairs", batch_size=8, batch_timeout=0.001)
    outputs = await run_all(serving, xs)
    for (a, b), out in zip(xs, outputs, strict=True):
        assert isinstance(out, tuple) and len(out) == 2
        assert out[0].tolist() == (a + b).tolist() and out[1].tolist() == (a * b).tolist()


@pytest.mark.realtime
async def test_dict_and_tuple_batches_cross_to_port_workers_and_back() -> None:
    options: dict[str, Any] = {
        "kind": "port",
        "batch_size": 8,
        "batch_timeout": 0.002,
        "port_options": {"env": port_env()},
    }
    dicts = Serving("serving_models:two_outputs", name="port-dicts", **options)
    xs = [tokens(3, start=i) for i in range(3)]
    outputs = await run_all(dicts, xs)
    assert [o["total"].tolist() for o in outputs] == [int(x["input_ids"].sum()) for x in xs]
    pairs = Serving("serving_models:pair_outputs", name="port-pairs", **options)
    ys = [(np.full(2, i, np.float32), np.ones(2, np.float32)) for i in range(3)]
    results = await run_all(pairs, ys)
    assert [type(r) for r in results] == [tuple] * 3
    assert [r[0].tolist() for r in results] == [[i + 1.0, i + 1.0] for i in range(3)]


async def test_a_dict_input_spec_is_checked_field_by_field() -> None:
    spec = {"input_ids": ((None,), "int64"), "attention_mask": ((None,), "int64")}
    serving = Serving(two_outputs, name="fields", batch_size=8, input_spec=spec)
    assert serving.options.input_spec == {
        "input_ids": InputSpec((None,), "int64"),
        "attention_mask": InputSpec((None,), "int64"),
    }
    async with Node([serving.child_spec()]):
        with pytest.raises(InvalidInput) as info:
            await serving.run({"input_ids": np.ones(3, np.float32), "attention_mask": np.ones(3)})
        assert str(info.value) == (
            "serving 'fields': input field 'input_ids' must be shape (*,) and dtype int64; "
            "got shape (3,) and dtype float32"
        )
        with pytest.raises(InvalidInput, match=r"fields \['attention_mask', 'input_ids'\]; got"):
            await serving.run({"input_ids": np.ones(3, np.int64)})
        with pytest.raises(
            InvalidInput, match=r"input must be a dict of arrays \(a dict of 'input_ids'"
        ):
            await serving.run(np.ones(3, np.int64))
        # Different lengths under a spec with a None axis batch apart, never in one stack.
        a, b = await asyncio.gather(serving.run(tokens(2)), serving.run(tokens(5)))
        assert (a.output["total"], b.output["total"]) == (3, 15)


async def test_an_output_field_of_the_wrong_length_fails_naming_the_field() -> None:
    def model() -> Any:
        return lambda b: {"good": b * 2, "bad": b[:1]}

    serving = Serving(
        model, name="fields", batch_size=8, batch_timeout=0.001, isolate_errors=False
    )  # fmt: skip
    async with Node([serving.child_spec()]):
        results = await asyncio.gather(
            serving.run(np.ones(2)), serving.run(np.ones(2)), return_exceptions=True
        )
    assert [str(r) for r in results] == [
        "serving 'fields': the model returned a dict of 2 items ('bad': (1, 2)) for a batch "
        "of 2; each output must be an array with that first axis"
    ] * 2


# -- the torch and ONNX adapters -------------------------------------------------------------


def keyword_module() -> Any:
    torch = pytest.importorskip("torch")

    class Encoder(torch.nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.embed = torch.nn.Embedding(50, 8)
            self.kind = torch.nn.Embedding(2, 8)
            self.out = torch.nn.Linear(8, 4)
            self.threads: list[int] = []

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            self.threads.append(torch.get_num_threads())
            hidden = self.embed(input_ids) + self.kind(token_type_ids)
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return {"last_hidden_state": hidden, "pooled": self.out(pooled)}

    return Encoder().eval()


def bert_inputs(n: int, start: int) -> dict[str, np.ndarray]:
    return {
        "input_ids": (np.arange(n, dtype=np.int64) + start) % 50,
        "attention_mask": np.ones(n, np.int64),
        "token_type_ids": np.zeros(n, np.int64),
    }


async def test_torch_takes_a_dict_batch_as_keyword_arguments_with_sequence_buckets() -> None:
    torch = pytest.importorskip("torch")
    module = keyword_module()
    xs = [bert_inputs(n, start=i) for i, n in enumerate((3, 4, 7, 2, 8))]
    serving = Serving(
        lambda: module, name="bert", batch_size=8, batch_timeout=0.001, threads=1,
        sequence_buckets=(4, 8), sequence_pad=0,
    )  # fmt: skip
    outputs = await run_all(serving, xs)
    for x, out in zip(xs, outputs, strict=True):
        with torch.no_grad():
            alone = module(**{k: torch.from_numpy(v[None]) for k, v in x.items()})
        n = len(x["input_ids"])
        # Unpadded back to the request's length; padding did not change the pooled vector.
        assert out["last_hidden_state"].shape == (n, 8)
        np.testing.assert_allclose(out["last_hidden_state"], alone["last_hidden_state"][0])
        np.testing.assert_allclose(out["pooled"], alone["pooled"][0], rtol=1e-5, atol=1e-6)
    assert set(module.threads) == {1}  # the budget, set on the partition's thread


async def test_a_three_input_bert_style_onnx_export_is_served_by_name(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    module = keyword_module()
    path = str(tmp_path / "bert.onnx")
    sample = {k: torch.from_numpy(np.stack([v, v])) for k, v in bert_inputs(4, 0).items()}
    batch, length = torch.export.Dim("batch"), torch.export.Dim("sequence")
    axes = {0: batch, 1: length}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own deprecation notices
        torch.onnx.export(
            module,
            (),
            path,
            kwargs=sample,
            input_names=list(sample),
            output_names=["last_hidden_state", "pooled"],
            dynamic_shapes=dict.fromkeys(sample, axes),
            dynamo=True,
            verbose=False,
        )
    from corral.serving.adapters.onnx import OnnxModel

    xs = [bert_inputs(n, start=i) for i, n in enumerate((3, 4, 6, 2))]
    serving = Serving(
        lambda: OnnxModel(path, output="pooled"), name="onnx-bert", batch_size=8,
        batch_timeout=0.001, sequence_buckets=(4, 8),
    )  # fmt: skip
    outputs = await run_all(serving, xs)
    both = OnnxModel(path)
    for x, out in zip(xs, outputs, strict=True):
        with torch.no_grad():
            alone = module(**{k: torch.from_numpy(v[None]) for k, v in x.items()})
        np.testing.assert_allclose(out, alone["pooled"][0], rtol=1e-4, atol=1e-5)
        direct = both.run({k: v[None] for k, v in x.items()})
        assert isinstance(direct, dict) and sorted(direct) == ["last_hidden_state", "pooled"]
    with pytest.raises(ValueError, match=r"fields \['nope'\] the model has no input for"):
        both.run({"nope": np.ones((1, 2), np.int64)})


# -- sequence buckets ------------------------------------------------------------------------


async def test_sequence_buckets_pad_to_the_bucket_key_by_it_and_unpad_outputs() -> None:
    seen: list[tuple[int, ...]] = []

    def model() -> Any:
        def run(batch: dict[str, np.ndarray]) -> Any:
            seen.append(batch["input_ids"].shape)
            return two_outputs()(batch)

        return run

    serving = Serving(
        model, name="buckets", batch_size=8, batch_timeout=0.001,
        sequence_buckets=(4, 8), sequence_pad={"input_ids": 0, "attention_mask": 0},
        sequence_unpad=("tokens",),  # per-token with 2 axes: named ("auto" takes 3 or more)
    )  # fmt: skip
    xs = [tokens(n, start=n) for n in (1, 3, 5, 8, 4)]
    outputs = await run_all(serving, xs)
    assert sorted(seen) == [(2, 8), (3, 4)]  # 1, 3, 4 -> bucket 4; 5, 8 -> bucket 8
    for x, out in zip(xs, outputs, strict=True):
        assert out["tokens"].tolist() == (x["input_ids"] * 2).tolist()
        assert out["total"] == x["input_ids"].sum()
    async with Node([serving.child_spec()]):
        with pytest.raises(InvalidInput) as info:
            await serving.run(tokens(9))
        assert str(info.value) == (
            "serving 'buckets': input must be a sequence of 1 to 8 items "
            "(sequence_buckets=(4, 8)); got length 9"
        )
        bad = {"input_ids": np.ones(3, np.int64), "attention_mask": np.ones(4, np.int64)}
        with pytest.raises(InvalidInput, match="must be sequence fields of one length"):
            await serving.run(bad)
        stats = serving.statistics()
        assert stats.invalid == 2


async def test_run_inline_pads_to_the_bucket_and_runs_the_hooks() -> None:
    shapes: list[tuple[int, ...]] = []

    def model() -> Any:
        def run(batch: np.ndarray) -> np.ndarray:
            shapes.append(batch.shape)
            return batch * 10

        return run

    serving = Serving(
        model, name="inline", sequence_buckets=(4, 8), sequence_unpad=True,
        preprocess=lambda text: np.array([len(w) for w in str(text).split()]),
        postprocess=lambda out: out.tolist(),
    )  # fmt: skip
    assert serving.run_inline("a bb ccc").output == [10, 20, 30]
    assert shapes == [(1, 4)]


async def test_a_caller_sends_text_and_gets_the_postprocessed_output() -> None:
    seen: list[tuple[int, ...]] = []

    def model() -> Any:
        def run(batch: np.ndarray) -> np.ndarray:
            seen.append(batch.shape)
            return batch.sum(axis=1, keepdims=True).astype(np.float64)

        return run

    serving = Serving(
        model, name="text", batch_size=8, batch_timeout=0.001, sequence_buckets=(2, 4),
        preprocess=lambda text: np.array([len(w) for w in str(text).split()]),
        postprocess=lambda out: float(out[0]),
    )  # fmt: skip
    outputs = await run_all(serving, ["a bb", "ccc", "a b c d"])
    assert outputs == [3.0, 3.0, 4.0]
    assert sorted(seen) == [(1, 4), (2, 2)]


# -- the thread budget -----------------------------------------------------------------------


def test_the_thread_budget_fits_partitions_into_the_cores() -> None:
    cores = len(os.sched_getaffinity(0))
    assert thread_budget(ServingOptions(partitions=1)) == cores
    assert thread_budget(ServingOptions(partitions=cores * 2)) == 1
    assert thread_budget(ServingOptions(partitions=2, threads=3)) == 3
    assert thread_budget(ServingOptions(threads=0)) == 0
    with pytest.raises(ValueError, match="threads must be an int >= 0 or None; got -1"):
        Serving(two_outputs, threads=-1)


@pytest.mark.realtime
async def test_port_workers_get_the_thread_budget_in_their_environment() -> None:
    base: dict[str, Any] = {"kind": "port", "batch_size": 4, "batch_timeout": 0.0}
    budget = Serving(
        "serving_models:thread_env", name="budget", partitions=1, threads=3,
        port_options={"env": port_env()}, **base,
    )  # fmt: skip
    assert (await run_all(budget, [np.ones(1)]))[0] == 3.0
    own = Serving(
        "serving_models:thread_env", name="own", threads=3,
        port_options={"env": {**port_env(), "OMP_NUM_THREADS": "5"}}, **base,
    )  # fmt: skip
    assert (await run_all(own, [np.ones(1)]))[0] == 5.0
    assert thread_env()(np.ones(1)).shape == (1,)


def test_sequence_options_are_checked() -> None:
    with pytest.raises(ValueError, match="promote_buckets needs sequence_buckets"):
        Serving(two_outputs, promote_buckets=1)
    with pytest.raises(ValueError, match="sequence_pad must be a number, or a non-empty"):
        Serving(two_outputs, sequence_buckets=(4,), sequence_pad={"x": "0"})


@pytest.mark.parametrize("promote", [0, 1])
async def test_promotion_folds_an_under_full_bucket_into_the_batch_a_free_partition_takes(
    promote: int,
) -> None:
    gate = Gate()
    shapes: list[tuple[int, ...]] = []

    async def model(batch: np.ndarray) -> np.ndarray:
        shapes.append(batch.shape)
        await gate.enter()
        return batch * 2

    serving = Serving(
        lambda: AsyncFunctionModel(model), name="promote", batch_size=8, batch_timeout=0.01,
        sequence_buckets=(4, 8), promote_buckets=promote, sequence_unpad=True,
    )  # fmt: skip
    async with Node([serving.child_spec()]):
        loop = asyncio.get_running_loop()
        start = loop.time()
        first = asyncio.ensure_future(serving.run(np.ones(6)))
        await asyncio.sleep(0.01)  # virtual time: its batch times out and is cut
        await wait_all_tasks_blocked()
        assert shapes == [(1, 8)]  # held at the gate: the one partition is busy
        longer = [asyncio.ensure_future(serving.run(np.ones(7))) for _ in range(2)]
        await wait_all_tasks_blocked()
        shorter = [asyncio.ensure_future(serving.run(np.ones(n))) for n in (1, 2, 3)]
        await wait_all_tasks_blocked()
        gate.open()
        results = await asyncio.gather(first, *longer, *shorter)
        assert [len(r.output) for r in results] == [6, 7, 7, 1, 2, 3]
        if promote:
            assert shapes == [(1, 8), (5, 8)]  # the 4-bucket rode along, padded to 8
        else:
            assert shapes == [(1, 8), (2, 8), (3, 4)]
        assert loop.time() - start == pytest.approx(0.02)  # cut at their batch_timeout
        stats = serving.statistics()
        assert (stats.batches, stats.completed) == (2 if promote else 3, 6)
        buckets = {b.bucket: b for b in stats.buckets}
        if promote:
            assert list(buckets) == [8]
            eight = buckets[8]
            assert (eight.batches, eight.requests, eight.samples, eight.promoted) == (2, 6, 6, 3)
            assert eight.padding == pytest.approx(1 - (6 + 7 + 7 + 1 + 2 + 3) / (8 + 5 * 8))
        else:
            assert list(buckets) == [4, 8]
            assert buckets[4].padding == pytest.approx(1 - 6 / 12)
            assert buckets[8].padding == pytest.approx(1 - (6 + 14) / (8 + 16))
            assert buckets[8].mean_batch_size == 1.5
        assert [b.window_batches for b in stats.buckets] == [b.batches for b in stats.buckets]
        assert stats.buckets[-1].window_throughput == stats.buckets[-1].samples / 10.0
        await asyncio.sleep(30.0)  # virtual time: the window moves past every batch
        later = serving.statistics(window=5.0).buckets
        assert [(b.window_batches, b.window_throughput, b.window_padding) for b in later] == [
            (0, 0.0, 0.0)
        ] * len(later)
        assert [b.batches for b in later] == [b.batches for b in stats.buckets]


async def test_a_swap_warms_every_bucket_with_the_warmup_sample_cut_or_padded() -> None:
    warmed: list[tuple[str, tuple[int, ...], list[int]]] = []

    def version(label: str) -> Any:
        def load() -> Any:
            def run(batch: dict[str, np.ndarray]) -> Any:
                ids = batch["input_ids"]
                warmed.append((label, ids.shape, ids[0].tolist()))
                return two_outputs()(batch)

            return run

        return load

    serving = Serving(
        version("v1"), name="warm", batch_size=4, batch_timeout=0.001, pad_to=(2, 4),
        sequence_buckets=(4, 8), sequence_pad={"input_ids": 0, "attention_mask": 0},
        preprocess=lambda n: tokens(int(n)),  # type: ignore[call-overload]
    )  # fmt: skip
    async with Node([serving.child_spec()]):
        await serving.swap(version("v2"), version="2", warmup=6)
        assert warmed == [
            ("v2", (2, 4), [1, 2, 3, 4]),  # cut to the 4 bucket, padded to pad_to's 2 rows
            ("v2", (2, 8), [1, 2, 3, 4, 5, 6, 0, 0]),
        ]
        assert (await serving.run(3)).output["total"] == 6


async def test_preprocess_in_the_partition_runs_on_its_thread_and_a_bad_request_fails_alone() -> (
    None
):
    threads: list[str] = []
    shapes: list[tuple[int, ...]] = []

    def words(text: object) -> np.ndarray:
        threads.append(threading.current_thread().name)
        if text == "boom":
            raise ValueError("cannot read 'boom'")
        if isinstance(text, list):  # run_batch: the hook gets the list, as in the caller
            rows = [words(t) for t in text]
            return np.stack([np.pad(r, (0, max(map(len, rows)) - len(r))) for r in rows])
        return np.array([len(w) for w in str(text).split()])

    def model() -> Any:
        def run(batch: np.ndarray) -> np.ndarray:
            shapes.append(batch.shape)
            return batch * 10

        return run

    serving = Serving(
        model, name="inside", batch_size=8, batch_timeout=0.001, sequence_buckets=(2, 4),
        sequence_unpad=True, preprocess=words, preprocess_in="partition",
    )  # fmt: skip
    async with Node([serving.child_spec()]):
        results = await asyncio.gather(
            serving.run("a bb"), serving.run("ccc"), serving.run("boom"),
            serving.run("a b c d"), return_exceptions=True,
        )  # fmt: skip
        batch = await serving.run_batch(["a bb", "ccc dd"])
        stats = serving.statistics()
    assert [r.output.tolist() for r in results if not isinstance(r, BaseException)] == [
        [10, 20],
        [30],
        [10, 10, 10, 10],
    ]
    assert str(results[2]) == "cannot read 'boom'"
    assert batch.output.tolist() == [[10, 20], [30, 20]]
    # The batch of 4 failed in preprocess (never reached the model) and was split in halves:
    # each half padded to the bucket of its longest request.
    assert shapes == [(2, 2), (1, 4), (2, 2)]
    assert set(threads) == {"corral-inside-v1-p0"}  # the partition's own thread
    assert (stats.completed, stats.failed, stats.invalid) == (4, 1, 0)
    with pytest.raises(ValueError, match="preprocess_in='partition' needs a preprocess hook"):
        Serving(model, preprocess_in="partition")
    with pytest.raises(ValueError, match="and kind 'thread' or 'loop'; got preprocess="):
        Serving("serving_models:double", kind="port", preprocess=words, preprocess_in="partition")
