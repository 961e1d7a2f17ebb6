"""Helpers for the gateway tests: bounded waits on observed state, request bodies, a gated
model."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from corral.serving import AsyncFunctionModel
from corral.testing import Gate

HERE = str(Path(__file__).resolve().parent)


def port_env(**extra: str) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": f"{HERE}{os.pathsep}{path}" if path else HERE, **extra}


async def until(check: Callable[[], bool], *, within: float = 5.0, what: str = "") -> float:
    """Wait until ``check()`` is true, looking every 5 ms, at most ``within`` seconds;
    return how long it took. Fails the test if it never becomes true."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    while not check():
        if loop.time() - began > within:
            raise AssertionError(f"not true within {within} s: {what or check}")
        await asyncio.sleep(0.005)
    return loop.time() - began


def tensor(values: object, datatype: str = "FP32", name: str = "x") -> dict[str, object]:
    arr = np.asarray(values)
    return {"name": name, "shape": list(arr.shape), "datatype": datatype, "data": arr.tolist()}


def infer_body(values: object, datatype: str = "FP32", **extra: object) -> dict[str, object]:
    return {"inputs": [tensor(values, datatype)], **extra}


class Gated:
    """A factory of async models held at ``gate`` (output: input * 2)."""

    def __init__(self) -> None:
        self.gate = Gate()

    def __call__(self) -> AsyncFunctionModel:
        return AsyncFunctionModel(self.run)

    async def run(self, batch: np.ndarray) -> np.ndarray:
        await self.gate.enter()
        return batch * 2
