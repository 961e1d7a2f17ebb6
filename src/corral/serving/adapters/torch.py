"""torch.nn.Module models. torch is imported when a ``TorchModel`` is made, not before."""

from __future__ import annotations

from typing import Any

import numpy as np

from corral._extras import require
from corral.serving.adapters.base import Model, one_array

__all__ = ["TorchModel"]


class TorchModel(Model):
    """Runs ``module(batch)`` under ``torch.inference_mode()`` on ``device`` ("cpu",
    "cuda:0"; None: where the module's parameters are, else cpu), in eval mode. The input is
    shared with numpy where possible (``torch.from_numpy``); the output is copied back to a
    numpy array on the CPU."""

    def __init__(self, module: Any, *, device: str | None = None) -> None:
        torch = require("torch", extra="torch", by="corral's TorchModel")
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"TorchModel: module must be a torch.nn.Module; got {module!r}")
        if device is None:
            params = list(module.parameters())
            device = str(params[0].device) if params else "cpu"
        self._torch = torch
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.require(batch, requirements=["C", "W"]))
            out = self.module(x.to(self.device, non_blocking=True))
            if isinstance(out, tuple | dict):
                return one_array(out)  # refused: structured outputs are not supported yet
            return np.asarray(out.detach().to("cpu").numpy())
