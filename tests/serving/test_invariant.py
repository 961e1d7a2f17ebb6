"""The serving's invariant, property-tested on virtual time: every accepted request ends
exactly once, with a row computed from its own input or a named error, no later than its
deadline, whatever raises where; and ``statistics()`` accounts for every request.

Faults are injected at every step of a batch's life: the cut, the stacking, the dispatch to
a partition, the model (a poison sample), splitting the output, delivering a result, the
death of a partition (a kill), and a swap, all at once or rolling (which may fail to warm
up).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import corral.serving.job as job_module
import corral.serving.server as server_module
from corral import KILL, Node
from corral.errors import (
    DeadlineExceeded,
    InvalidInput,
    PartitionCrashed,
    ServingError,
    ServingOverloaded,
)
from corral.serving import AsyncFunctionModel, BatchPolicy, Serving
from corral.serving.runners import Runner


class Injected(Exception):
    """A fault the test injected."""


class Poison(Exception):
    """The model's error on a poison sample (first element < 0)."""


def model_factory(factor: float, compute: float) -> Callable[[], object]:
    async def run(batch: np.ndarray) -> np.ndarray:
        await asyncio.sleep(compute)
        if (batch[:, 0] < 0).any():
            raise Poison("poison sample")
        return batch * factor

    def plain(batch: np.ndarray) -> np.ndarray:
        if (batch[:, 0] < 0).any():
            raise Poison("poison sample")
        return batch * factor

    def load() -> object:
        return AsyncFunctionModel(run) if compute > 0 else plain

    return load


@contextlib.contextmanager
def inject(step: str, nth: int) -> Iterator[None]:
    """Make the ``nth`` call (1-based) of ``step`` raise ``Injected``."""
    targets: dict[str, tuple[object, str]] = {
        "cut": (BatchPolicy, "cut"),
        "stack": (job_module, "_stack"),
        "dispatch": (Runner, "run"),
        "split": (server_module, "split_output"),
        "deliver": (server_module, "new_result"),
    }
    if step not in targets:
        yield
        return
    owner, attr = targets[step]
    original = getattr(owner, attr)
    calls = 0

    def faulty(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == nth:
            raise Injected(f"{step} #{nth}")
        return original(*args, **kwargs)

    setattr(owner, attr, faulty)
    try:
        yield
    finally:
        setattr(owner, attr, original)


@dataclass
class Call:
    value: float
    size: int  # 0: run(); else run_batch() of that many samples
    width: int  # sample length: different widths batch apart
    at: float
    deadline: float | None
    poison: bool
    invalid: bool
    cancel_after: float | None


calls = st.builds(
    Call,
    value=st.just(0.0),
    size=st.sampled_from([0, 0, 0, 1, 2, 3]),
    width=st.sampled_from([4, 4, 4, 3]),
    at=st.floats(0, 0.05),
    deadline=st.one_of(st.none(), st.floats(0.001, 0.2)),
    poison=st.sampled_from([False] * 7 + [True]),
    invalid=st.sampled_from([False] * 9 + [True]),
    cancel_after=st.one_of(st.none(), st.none(), st.floats(0, 0.05)),
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    requests=st.lists(calls, min_size=1, max_size=40),
    batch_size=st.integers(1, 8),
    batch_timeout=st.sampled_from([0.0, 0.002, 0.01]),
    partitions=st.integers(1, 3),
    retry_on_crash=st.integers(0, 2),
    isolate=st.booleans(),
    max_queue=st.sampled_from([4, 64]),
    compute=st.sampled_from([0.0, 0.003]),
    fault=st.sampled_from(["none", "cut", "stack", "dispatch", "split", "deliver", "kill"]),
    nth=st.integers(1, 6),
    swap=st.sampled_from([None, "good", "bad", "rolling good", "rolling bad"]),
)
async def test_every_request_ends_once_with_its_own_answer_by_its_deadline(
    requests: list[Call],
    batch_size: int,
    batch_timeout: float,
    partitions: int,
    retry_on_crash: int,
    isolate: bool,
    max_queue: int,
    compute: float,
    fault: str,
    nth: int,
    swap: str | None,
) -> None:
    serving = Serving(
        model_factory(2.0, compute),
        name="inv",
        kind="thread" if compute > 0 else "loop",
        batch_size=batch_size,
        batch_timeout=batch_timeout,
        partitions=partitions,
        retry_on_crash=retry_on_crash,
        isolate_errors=isolate,
        max_queue=max_queue,
        partition_max_restarts=100,
        swap="rolling" if swap is not None and swap.startswith("rolling") else "all_at_once",
    )
    loop = asyncio.get_running_loop()
    outcomes: dict[int, tuple[str, object, float]] = {}
    submitted: set[int] = set()

    async def caller(i: int, call: Call) -> None:
        try:
            await asyncio.sleep(call.at)
        except asyncio.CancelledError:
            outcomes[i] = ("cancelled", None, 0.0)
            return
        value = float(i + 1) * (-1 if call.poison else 1)
        x: object
        if call.invalid:
            x = "not an array" if i % 2 else None
        elif call.size == 0:
            x = np.full(call.width, value, np.float32)
        else:
            x = np.full((call.size, call.width), value, np.float32)
        start = loop.time()
        submitted.add(i)
        try:
            if call.size == 0:
                result = await serving.run(x, deadline=call.deadline)
            else:
                result = await serving.run_batch(x, deadline=call.deadline)
        except asyncio.CancelledError:
            outcomes[i] = ("cancelled", None, loop.time() - start)
            return
        except Exception as exc:
            outcomes[i] = ("error", exc, loop.time() - start)
            return
        factor = 2.0 if result.version == "1" else 3.0
        assert np.array_equal(result.output, np.asarray(x) * factor), (i, result)
        outcomes[i] = ("ok", result.version, loop.time() - start)

    async def chaos() -> None:
        if fault == "kill":
            await asyncio.sleep(0.002 * nth)
            pids = serving.partition_pids()
            pids[nth % len(pids)].exit(KILL)
        if swap is not None:
            await asyncio.sleep(0.01)
            good = swap.endswith("good")
            factor = 3.0 if good else 2.0
            warm = np.full(4, 1.0 if good else -1.0, np.float32)
            with contextlib.suppress(ServingError):
                await serving.swap(model_factory(factor, compute), version="2", warmup=warm)

    with inject(fault, nth):
        async with Node([serving.child_spec()]):
            tasks = [asyncio.create_task(caller(i, c)) for i, c in enumerate(requests)]
            chaos_task = asyncio.create_task(chaos())
            for task, call in zip(tasks, requests, strict=True):
                if call.cancel_after is not None:
                    loop.call_later(call.at + call.cancel_after, task.cancel)
            await asyncio.wait_for(asyncio.gather(*tasks, chaos_task), 3600)
            stats = serving.statistics()

    assert len(outcomes) == len(requests)
    counts = dict.fromkeys(["ok", "expired", "invalid", "overloaded", "failed", "cancelled"], 0)
    unsent = 0
    for i, call in enumerate(requests):
        kind, value, took = outcomes[i]
        if call.deadline is not None and kind != "cancelled":
            assert took <= call.deadline + 1e-9, (i, call, outcomes[i])
        if kind == "cancelled" and i not in submitted:
            unsent += 1
            continue
        if kind in ("ok", "cancelled"):
            counts[kind] += 1
            continue
        assert isinstance(value, Exception)
        too_big = call.size > batch_size
        if isinstance(value, InvalidInput):
            assert call.invalid or too_big
            counts["invalid"] += 1
        elif isinstance(value, ServingOverloaded):
            counts["overloaded"] += 1
        elif isinstance(value, DeadlineExceeded):
            counts["expired"] += 1
        else:
            counts["failed"] += 1
            # Named errors only: the model's (its own poison, or a neighbour's when
            # isolation is off), a crash with no retry left, an injected fault.
            assert isinstance(value, Poison | PartitionCrashed | Injected | ServingError), value
            if isinstance(value, Poison) and isolate:
                assert call.poison, (i, call, value)
        assert not (call.invalid or too_big) or isinstance(value, InvalidInput)
    assert stats.in_flight == 0
    assert stats.requests == len(requests) - unsent
    assert stats.requests == (
        stats.completed
        + stats.failed
        + stats.expired
        + stats.cancelled
        + stats.overloaded
        + stats.invalid
        + stats.in_flight
    )
    assert (stats.invalid, stats.overloaded) == (counts["invalid"], counts["overloaded"])
    # A caller cancelled after its answer was set but before it woke sees CancelledError;
    # the serving counted the answer. Every other outcome is seen as counted.
    assert stats.cancelled <= counts["cancelled"]
    assert stats.completed >= counts["ok"]
    assert stats.expired >= counts["expired"]
    assert stats.failed >= counts["failed"]
