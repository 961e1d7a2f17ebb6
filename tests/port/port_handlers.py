"""Handlers the port tests run in real worker processes (imported by module path)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import numpy as np


class Echo:
    def setup(self, **args: object) -> None:
        self.args = args
        self.casts: list[object] = []

    def handle_call(self, msg: object) -> object:
        if not isinstance(msg, list):
            return msg  # tuples from Erlang, arrays, scalars: echo
        match msg:
            case ["args"]:
                return self.args
            case ["casts"]:
                return self.casts
            case ["pid"]:
                return os.getpid()
            case ["raise", str(text)]:
                raise ValueError(text)
            case ["exit", int(status)]:
                sys.stderr.write(f"exiting with {status}\n")
                sys.stderr.flush()
                os._exit(status)
            case ["signal", int(number)]:
                os.kill(os.getpid(), number)
                time.sleep(10)
            case ["segfault"]:
                import ctypes

                ctypes.string_at(0)
            case ["sleep", float(seconds)]:
                time.sleep(seconds)
                return seconds
            case ["print", str(text)]:
                print(text)
                return "printed"
            case ["garbage"]:
                os.write(3, b"this is not a frame at all")  # the protocol fd, on purpose
                time.sleep(10)
            case ["array", list(shape)]:
                return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
            case ["sum", arr]:
                return float(np.asarray(arr).sum())
        return msg

    def handle_cast(self, msg: object) -> None:
        self.casts.append(msg)


class FailingSetup:
    def setup(self, **args: object) -> None:
        raise RuntimeError("model file not found: /models/missing.onnx")

    def handle_call(self, msg: object) -> object:
        return msg


class AsyncHandler:
    async def handle_call(self, msg: object) -> object:
        match msg:
            case ["wait", float(seconds), tag]:
                await asyncio.sleep(seconds)
                return tag
        return msg


class NumpyModel:
    """Imports numpy and builds a small model, as a real handler would."""

    def setup(self, **args: object) -> None:
        rng = np.random.default_rng(0)
        self.w = rng.standard_normal((64, 10)).astype(np.float32)

    def handle_call(self, msg: object) -> object:
        if isinstance(msg, np.ndarray):
            return msg @ self.w
        if msg == ["pid"]:
            return os.getpid()
        return msg


def _unused() -> None:  # keep signal imported for handlers that send signals
    signal.getsignal(signal.SIGTERM)


class SharedArrays:
    """For the shared-memory tests: echoes, holds and makes large arrays."""

    def setup(self, **args: object) -> None:
        self.held: list[object] = []

    def handle_call(self, msg: object) -> object:
        import dataclasses

        import msgpack

        from corral.port import shm

        match msg:
            case ["echo", value]:
                return value  # an array received through shared memory is forwarded
            case ["copy", value]:
                return np.array(value)  # a new array: a new (or reused) segment
            case ["hold", value]:
                self.held.append(value)  # keep it mapped until the worker dies
                return len(self.held)
            case ["make", int(rows), str(dtype)]:
                return np.arange(rows * 1024).reshape(rows, 1024).astype(dtype)
            case ["stats"]:
                return dataclasses.asdict(shm.statistics())
            case ["pid"]:
                return os.getpid()
            case ["unsent_segment"]:
                # A shared-array reference whose segment was never sent: a protocol breach.
                header = msgpack.packb(["<f4", [4], [12345, 0]])
                return msgpack.ExtType(2, header)
        raise ValueError(f"unknown message {msg!r}")


class Hooks:
    """For the tests that hold both wire modes to the same hook rules: an async setup, an
    async cast that may raise, and calls that raise or return what has no wire form."""

    async def setup(self, **args: object) -> None:
        await asyncio.sleep(0)
        self.setups = 1
        self.casts: list[object] = []

    def handle_call(self, msg: object) -> object:
        match msg:
            case ["setups"]:
                return self.setups
            case ["casts"]:
                return self.casts
            case ["raise"]:
                raise ValueError("bad input")
            case ["unencodable"]:
                return {1, 2}
        return msg

    async def handle_cast(self, msg: object) -> None:
        await asyncio.sleep(0)
        if msg == -1:
            raise RuntimeError("cast went wrong")
        self.casts.append(msg)


class AsyncHooks(Hooks):
    """``Hooks`` with an async ``handle_call``: the msgpack worker's concurrent loop."""

    async def handle_call(self, msg: object) -> object:
        return super().handle_call(msg)


class LoggedSetup(Echo):
    """Appends '<pid> start' and '<pid> end' to the file ``log`` around a setup that takes
    0.2 s (a model's load), so a test can see which setups overlapped."""

    def setup(self, **args: object) -> None:
        log = str(args["log"])
        with open(log, "a") as f:
            f.write(f"{os.getpid()} start\n")
        time.sleep(0.2)
        with open(log, "a") as f:
            f.write(f"{os.getpid()} end\n")
        super().setup(**args)
