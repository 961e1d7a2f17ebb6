"""onnxruntime sessions. onnxruntime is imported only to open a model from a path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from corral._extras import require
from corral.serving.adapters.base import Batch, Model

__all__ = ["OnnxModel"]


class OnnxModel(Model):
    """Runs an ``onnxruntime.InferenceSession`` (or a path to an ``.onnx`` file, opened
    with the CPU provider).

    Inputs by name: a dict batch feeds the session's inputs of those names (a 3-input BERT
    export takes ``{"input_ids", "attention_mask", "token_type_ids"}``), a tuple batch its
    inputs in order, an array batch one input (``input_name``; default: the first).
    Outputs by name: ``output`` a name returns that output's array; a sequence of names
    returns a dict of them; None returns the one output's array when the session has one,
    else a dict of every output by name.
    """

    def __init__(
        self,
        session: Any,
        *,
        input_name: str | None = None,
        output: str | Sequence[str] | None = None,
    ) -> None:
        if isinstance(session, str):
            ort = require("onnxruntime", extra="onnx", by="corral's OnnxModel")
            session = ort.InferenceSession(session, providers=["CPUExecutionProvider"])
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.input_name = input_name or self.input_names[0]
        names = [o.name for o in session.get_outputs()]
        if output is None:
            self.output: str | None = names[0] if len(names) == 1 else None
            self.outputs = names
        elif isinstance(output, str):
            self.output = output
            self.outputs = [output]
        else:
            self.output = None
            self.outputs = list(output)

    def _feed(self, batch: Batch) -> dict[str, np.ndarray]:
        if isinstance(batch, dict):
            unknown = sorted(set(batch) - set(self.input_names))
            if unknown:
                raise ValueError(
                    f"OnnxModel: the batch has fields {unknown} the model has no input for; "
                    f"its inputs are {self.input_names}"
                )
            return {k: np.ascontiguousarray(v) for k, v in batch.items()}
        if isinstance(batch, tuple):
            if len(batch) > len(self.input_names):
                raise ValueError(
                    f"OnnxModel: a tuple batch of {len(batch)} fields for a model with "
                    f"{len(self.input_names)} inputs {self.input_names}"
                )
            return {
                n: np.ascontiguousarray(v) for n, v in zip(self.input_names, batch, strict=False)
            }
        return {self.input_name: np.ascontiguousarray(batch)}

    def run(self, batch: Batch) -> object:
        results = self.session.run(self.outputs, self._feed(batch))
        if self.output is not None:
            return np.asarray(results[0])
        return {n: np.asarray(r) for n, r in zip(self.outputs, results, strict=True)}
