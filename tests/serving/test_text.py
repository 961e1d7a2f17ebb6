"""all-MiniLM-L6-v2 served end to end: text in (the serving tokenizes in the caller's task
and buckets by token length), a sentence embedding out, equal to direct calls of the model.
The model loads once for this module."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from minilm import minilm_path

from corral import Node
from corral.serving import Serving

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "semantic_search" / "search.py"

SENTENCES = [
    "Return the absolute value of the argument.",
    "hi",
    inspect.getdoc(asyncio.gather) or "",
    "Split the string at the last occurrence of sep, and return a 3-tuple.",
    inspect.getdoc(inspect.signature) or "",
    "numbers",
    "Create a new dictionary with keys from iterable and values set to value.",
    inspect.getdoc(np.pad) or "",
]


@pytest.fixture(scope="module")
def text() -> tuple[Any, Any]:
    path = minilm_path()
    from corral.serving.adapters.text import SentenceEncoder, Tokenizer

    return Tokenizer(path, max_length=128), SentenceEncoder(path)


async def test_a_caller_sends_text_and_gets_the_embedding_of_a_direct_call(
    text: tuple[Any, Any],
) -> None:
    tokenizer, encoder = text
    serving = Serving(
        lambda: encoder, name="minilm", batch_size=8, batch_timeout=0.002, partitions=2,
        preprocess=tokenizer, sequence_buckets=(16, 32, 64, 128), promote_buckets=1,
    )  # fmt: skip
    async with Node([serving.child_spec()]):
        results = await asyncio.gather(*[serving.run(s) for s in SENTENCES])
        batched = await serving.run_batch(SENTENCES[:3])
        stats = serving.statistics()
    for sentence, result in zip(SENTENCES, results, strict=True):
        alone = encoder.run({k: v[None] for k, v in tokenizer(sentence).items()})[0]
        assert result.output.shape == (384,) and result.output.dtype == np.float32
        np.testing.assert_allclose(result.output, alone, atol=2e-5)
    assert batched.output.shape == (3, 384)
    np.testing.assert_allclose(batched.output[0], results[0].output, atol=2e-5)
    assert stats.completed == len(SENTENCES) + 1 and stats.failed == 0
    # Tokenizing on the partition's thread instead gives the same embeddings.
    inside = Serving(
        lambda: encoder, name="minilm-inside", batch_size=8, batch_timeout=0.002,
        preprocess=tokenizer, preprocess_in="partition", sequence_buckets=(16, 32, 64, 128),
    )  # fmt: skip
    async with Node([inside.child_spec()]):
        again = await asyncio.gather(*[inside.run(s) for s in SENTENCES[:4]])
    for first, second in zip(results, again, strict=False):
        np.testing.assert_allclose(first.output, second.output, atol=2e-5)


def test_the_encoder_is_the_sentence_transformers_recipe(text: tuple[Any, Any]) -> None:
    tokenizer, encoder = text
    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(minilm_path(), device="cpu")
    short = [SENTENCES[i] for i in (0, 1, 3, 5)]  # within 128 tokens: no truncation differs
    expected = reference.encode(short, convert_to_numpy=True)
    got = np.stack([encoder.run({k: v[None] for k, v in tokenizer(s).items()})[0] for s in short])
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_a_text_longer_than_max_length_is_truncated_to_the_largest_bucket(
    text: tuple[Any, Any],
) -> None:
    tokenizer, encoder = text
    serving = Serving(
        lambda: encoder, name="inline", preprocess=tokenizer, sequence_buckets=(16, 128)
    )
    long = " ".join(["word"] * 500)
    assert tokenizer(long)["input_ids"].shape == (128,)
    assert serving.run_inline(long).output.shape == (384,)
    with pytest.raises(TypeError, match="Tokenizer: expected a str or a list of str; got int"):
        tokenizer(3)


@pytest.mark.realtime
async def test_the_semantic_search_example_in_quick_mode(text: tuple[Any, Any]) -> None:
    # In this process, so that torch and transformers are imported once for the session.
    spec = importlib.util.spec_from_file_location("semantic_search", EXAMPLE)
    assert spec is not None and spec.loader is not None
    search = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(search)
    report = await search.main(quick=True, http=True)
    assert (report["documents"], report["queries"]) == (400, 8)
    assert report["recall_at_10"] >= 0.5  # an approximate index: most neighbours found
    assert report["http_matches_serving"] is True
    buckets = report["buckets"]
    assert set(buckets) <= {"16", "32", "64", "128"} and "16" in buckets
    assert sum(b["batches"] for b in buckets.values()) >= 1
