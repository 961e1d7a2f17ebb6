"""onnxruntime sessions. onnxruntime is imported only to open a model from a path."""

from __future__ import annotations

from typing import Any

import numpy as np

from corral._extras import require
from corral.serving.adapters.base import Model

__all__ = ["OnnxModel"]


class OnnxModel(Model):
    """Runs an ``onnxruntime.InferenceSession`` (or a path to an ``.onnx`` file, opened
    with the CPU provider) on one input; returns its first output (or ``output``)."""

    def __init__(
        self, session: Any, *, input_name: str | None = None, output: str | None = None
    ) -> None:
        if isinstance(session, str):
            ort = require("onnxruntime", extra="onnx", by="corral's OnnxModel")
            session = ort.InferenceSession(session, providers=["CPUExecutionProvider"])
        self.session = session
        self.input_name = input_name or session.get_inputs()[0].name
        self.output = output or session.get_outputs()[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        feed = {self.input_name: np.ascontiguousarray(batch)}
        return np.asarray(self.session.run([self.output], feed)[0])
