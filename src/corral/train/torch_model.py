"""A torch module as a trainer model: the one place corral.train imports torch (lazily).

``TorchModel(module="pkg.nets:make_net", module_args={...})`` builds the network by calling
the factory (after ``torch.manual_seed(seed)``, so initial weights follow ``seed``) and trains
it with plain SGD (no optimizer state) on data columns ``x`` (float features) and ``y``
(class indices for ``loss="cross_entropy"``, float targets for ``"mse"``). Parameters are the
module's ``state_dict`` as float numpy arrays. ``threads`` caps torch's intra-op threads, so N
workers on N cores do not oversubscribe. ``mlp`` is a ready factory for a small MLP.
Everything blocks in the calling thread; torch errors propagate.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from corral._extras import require
from corral.train.model import Data, Parameters, TrainStats, rows
from corral.train.sgd import check_hyper

__all__ = ["TorchModel", "mlp"]

_LOSSES = ("cross_entropy", "mse")


def _torch() -> Any:
    return require("torch", extra="torch", by="corral's torch trainer model")


def mlp(inputs: int, hidden: int, outputs: int) -> Any:
    """``Linear(inputs, hidden) -> ReLU -> Linear(hidden, outputs)``."""
    nn = _torch().nn
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, outputs))


class TorchModel:
    """A torch ``nn.Module`` behind the model protocol (see the module doc)."""

    def __init__(
        self,
        module: str,
        *,
        module_args: Mapping[str, object] | None = None,
        loss: str = "cross_entropy",
        lr: float = 0.05,
        batch_size: int = 32,
        seed: int = 0,
        threads: int = 1,
    ) -> None:
        if loss not in _LOSSES:
            raise ValueError(
                f"invalid options for model TorchModel: loss must be one of "
                f"{', '.join(_LOSSES)}; got {loss!r}"
            )
        check_hyper("TorchModel", "lr", lr, 0, strict=True)
        torch = self._t = _torch()
        torch.set_num_threads(threads)
        module_name, _, attr = module.partition(":")
        torch.manual_seed(seed)
        self.net = getattr(importlib.import_module(module_name), attr)(**dict(module_args or {}))
        self.loss_name, self.lr, self.batch_size = loss, float(lr), batch_size
        self._loss = (
            torch.nn.functional.cross_entropy
            if loss == "cross_entropy"
            else torch.nn.functional.mse_loss
        )
        # Plain SGD by hand (``p -= lr * grad``, the very update torch.optim.SGD makes without
        # momentum or weight decay): building a torch.optim.SGD costs ~1.5-2 s of lazy imports
        # (torch._dynamo) in each new worker process, spares included.
        self._params = [p for p in self.net.parameters() if p.requires_grad]

    def get_parameters(self) -> Parameters:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.net.state_dict().items()}

    def set_parameters(self, parameters: Mapping[str, npt.NDArray[np.generic]]) -> None:
        t = self._t
        self.net.load_state_dict({k: t.from_numpy(np.array(v)) for k, v in parameters.items()})

    def _tensors(self, data: Data) -> tuple[Any, Any]:
        t = self._t
        x = t.from_numpy(np.asarray(data["x"], dtype=np.float32))
        y = np.asarray(data["y"])
        if self.loss_name == "cross_entropy":
            return x, t.from_numpy(y.astype(np.int64))
        return x, t.from_numpy(y.astype(np.float32))

    def train(self, data: Data, *, epochs: int, seed: int) -> TrainStats:
        t, n = self._t, rows(data)
        x, y = self._tensors(data)
        generator = t.Generator().manual_seed(seed)
        params, lr = self._params, self.lr
        loss_value = 0.0
        self.net.train()
        for _ in range(epochs):
            order, total = t.randperm(n, generator=generator), 0.0
            for start in range(0, n, self.batch_size):
                index = order[start : start + self.batch_size]
                for p in params:
                    p.grad = None
                loss = self._loss(self.net(x[index]), y[index])
                loss.backward()
                with t.no_grad():
                    for p in params:
                        if p.grad is not None:
                            p.add_(p.grad, alpha=-lr)
                total += float(loss.detach()) * len(index)
            loss_value = total / n
        return TrainStats(loss=loss_value, samples=n * epochs)

    def evaluate(self, data: Data) -> dict[str, float]:
        t = self._t
        x, y = self._tensors(data)
        self.net.eval()
        with t.no_grad():
            out = self.net(x)
            metrics = {"loss": float(self._loss(out, y))}
            if self.loss_name == "cross_entropy":
                metrics["accuracy"] = float((out.argmax(dim=1) == y).float().mean())
        return metrics
