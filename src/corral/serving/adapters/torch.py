"""torch.nn.Module models. torch is imported when a ``TorchModel`` is made, not before."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from corral._extras import require
from corral.serving.adapters.base import Batch, Model

__all__ = ["TorchModel"]


class TorchModel(Model):
    """Runs ``module(batch)`` under ``torch.inference_mode()`` on ``device`` ("cpu",
    "cuda:0"; None: where the module's parameters are, else cpu), in eval mode. A dict batch
    is passed as keyword arguments (``module(input_ids=..., attention_mask=...)``), a tuple
    batch as positional ones. Inputs are shared with numpy where possible
    (``torch.from_numpy``); the output — a tensor, a tuple of tensors, or a dict of them (a
    Hugging Face ``ModelOutput`` too; entries that are not tensors are left out) — is copied
    back to numpy arrays on the CPU, keeping its structure."""

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

    def set_threads(self, threads: int) -> None:
        """``torch.set_num_threads(threads)``, on the partition's thread: with torch's
        OpenMP backend it holds for that thread's operations (and threads started later)."""
        if threads >= 1 and self._torch.get_num_threads() != threads:
            self._torch.set_num_threads(threads)

    def _tensor(self, arr: np.ndarray) -> Any:
        x = self._torch.from_numpy(np.require(arr, requirements=["C", "W"]))
        return x.to(self.device, non_blocking=True)

    def run(self, batch: Batch) -> object:
        torch = self._torch
        with torch.inference_mode():
            if isinstance(batch, dict):
                out = self.module(**{k: self._tensor(v) for k, v in batch.items()})
            elif isinstance(batch, tuple):
                out = self.module(*(self._tensor(v) for v in batch))
            else:
                out = self.module(self._tensor(batch))
            return self._numpy(out)

    def _numpy(self, out: Any) -> object:
        torch = self._torch
        if isinstance(out, torch.Tensor):
            return np.asarray(out.detach().to("cpu").numpy())
        if isinstance(out, Mapping):
            return {
                k: np.asarray(v.detach().to("cpu").numpy())
                for k, v in out.items()
                if isinstance(v, torch.Tensor)
            }
        if isinstance(out, tuple | list):
            return tuple(self._numpy(v) for v in out)
        return np.asarray(out)
