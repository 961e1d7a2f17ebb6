"""Hot swap: load a new model version beside the old one, warm it, put it in service, drain
and stop the old one. Two strategies (``ServingOptions.swap``).

``run_swap`` runs as a task of the server (so the new partitions supervisor is linked to the
server).

**All at once** (``"all_at_once"``):

1. start the new version's partitions (all at once; each loads its model);
2. warm up: run ``warmup`` (one sample; with sequence buckets, one batch per bucket, the
   sample cut or padded to each length) through every new partition, all at once; an error
   or a partition failing to start stops the new partitions and raises ``SwapFailed``
   (rolled back: the old version never stopped serving);
3. flip: batches cut from now on go to the new version (one assignment, between two batches);
4. drain: wait until the old version's running batches finish (their results carry the old
   version), then stop its partitions.

**Rolling** (``"rolling"``), for partition k = 0, 1, ..., N-1 in turn:

1. start the new version's partition k (it loads its model while all N old ones serve);
2. warm it up on ``warmup``;
3. put it in service: batches are cut for it from now on (the first time, the new version
   becomes current, and both versions take batches until the last step);
4. take the old partition k out of service, wait for the batch it runs, stop it.

So at most one model loads at a time, the partitions in service never drop below N (N + 1
between steps 3 and 4), and at most N + 1 models are held at once (all at once: 2N). A
failure at step 1 or 2 of partition k rolls back: the new partition k is stopped, then each
partition already replaced (k-1 down to 0) goes back to the old version the same way — the
old partition restarts (loading the old model again), is put in service, and the new one is
drained and stopped — and ``SwapFailed`` is raised; the old version served throughout, on
N partitions. Should an old partition fail to load again during that, nothing is left to go
back to: the error propagates and the server crashes (its supervisor restarts the serving),
as when a partition cannot restart after a crash.

Either way no request fails because of a swap: queued requests wait for a partition in
service like any others, and a batch of the old version whose partition dies is retried on
a partition in service. The old version's port spares are stopped with it
(``Generation.stop``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from corral import telemetry
from corral.errors import SwapFailed
from corral.serving.options import ServingOptions, swap_strategy
from corral.serving.runners import Crashed, ModelFailed

if TYPE_CHECKING:
    from corral.serving.factory import ModelFactory
    from corral.serving.generation import Generation, Slot
    from corral.serving.policy import BatchPolicy
    from corral.serving.versions import Versions

__all__ = ["STEP_EVENT", "SWAP_EVENT", "SwapHost", "run_swap"]

SWAP_EVENT = ("corral", "serving", "swapped")
STEP_EVENT = ("corral", "serving", "swap_step")
"""A rolling swap's step: metadata ``serving``, ``version`` (of the partition), ``partition``
(its index), ``step``: ``"serving"`` (put in service) or ``"stopped"`` (out of service and
stopped)."""


class SwapHost(Protocol):
    """What a swap needs of the server running it (``ServingServer`` is one)."""

    name: str
    options: ServingOptions
    policy: BatchPolicy
    versions: Versions

    async def start_generation(
        self, factory: ModelFactory, version: str, indices: Sequence[int] | None = None
    ) -> Generation: ...

    def warmup_batches(self, warmup: object) -> list[object]: ...

    def pump(self) -> None: ...


async def run_swap(server: SwapHost, factory: ModelFactory, version: str, warmup: object) -> None:
    """Swap ``server`` to ``factory`` as ``version``; raises ``SwapFailed`` on rollback.
    Cancelling it (the server stops) stops the new partitions not in service yet; the
    server's own stop takes care of the rest."""
    # The warm-up batches each new partition runs, in order: one per sequence bucket (one
    # without buckets). A sample the contract refuses fails the swap before anything starts.
    batches: list[object] = []
    if warmup is not None:
        try:
            batches = server.warmup_batches(warmup)
        except Exception as exc:
            raise _failed(server, version, exc) from exc
    old = server.versions.current
    if old is not None and swap_strategy(server.options) == "rolling":
        await _rolling(server, factory, version, batches, old)
    else:
        await _all_at_once(server, factory, version, batches)


async def _warm(slots: Sequence[Slot], batches: Sequence[object]) -> None:
    """Run each of ``batches`` through every one of ``slots`` (all slots at once, through
    the runner that will run their batches); raises the first error."""
    for batch in batches:
        runs = (slot.runner.run_once(batch) for slot in slots)  # type: ignore[arg-type]
        outcomes = await asyncio.gather(*runs)
        for out in outcomes:
            if isinstance(out, ModelFailed | Crashed):
                raise out.error


def _failed(server: SwapHost, version: str, exc: Exception) -> SwapFailed:
    telemetry.emit((*SWAP_EVENT, "failed"), {}, {"serving": server.name, "version": version})
    return SwapFailed(server.name, version, exc)


def _swapped(server: SwapHost, version: str, old: Generation | None) -> None:
    previous = None if old is None else old.version
    telemetry.emit(
        SWAP_EVENT, {}, {"serving": server.name, "version": version, "previous": previous}
    )


async def _all_at_once(
    server: SwapHost, factory: ModelFactory, version: str, batches: list[object]
) -> None:
    new: Generation | None = None
    try:
        new = await server.start_generation(factory, version)
        await _warm(new.slots, batches)  # every partition warms at once
    except BaseException as exc:
        if new is not None:
            await new.stop()
        if isinstance(exc, Exception):
            raise _failed(server, version, exc) from exc
        raise
    old = server.versions.flip(new)
    server.pump()
    _swapped(server, version, old)
    if old is not None:
        await server.versions.retire(old)


async def _rolling(
    server: SwapHost,
    factory: ModelFactory,
    version: str,
    batches: list[object],
    old: Generation,
) -> None:
    versions = server.versions
    # The new version's supervisor, with no partition yet: they start one at a time.
    try:
        new = await server.start_generation(factory, version, ())
    except Exception as exc:
        raise _failed(server, version, exc) from exc
    replaced: list[int] = []
    warming: Slot | None = None
    try:
        for old_slot in list(old.slots):
            index = old_slot.index
            warming = await new.add(index)
            await _warm([warming], batches)
            if not replaced:
                versions.join(new)
            slot, warming = warming, None
            await _replace(server, new, slot, old, old_slot)
            replaced.append(index)
    except BaseException as exc:
        if not isinstance(exc, Exception):
            if not replaced:
                await new.stop()  # not in service: the server's stop would not see it
            raise
        if warming is not None:
            await new.retire(warming)  # the one whose warm-up failed
        # SwapFailed only once the old version serves alone again.
        await _roll_back(server, new, old, replaced)
        raise _failed(server, version, exc) from exc
    versions.leave(old)
    _swapped(server, version, old)
    await versions.retire(old)


async def _replace(
    server: SwapHost, into: Generation, slot: Slot, out_of: Generation, out: Slot
) -> None:
    """Put ``slot`` (of ``into``) in service, then take ``out`` (of ``out_of``) out of it
    and stop it."""
    into.serve(slot)
    server.pump()
    _step(server, into, slot.index, "serving")
    await out_of.retire(out)
    _step(server, out_of, out.index, "stopped")


def _step(server: SwapHost, gen: Generation, index: int, step: str) -> None:
    telemetry.emit(
        STEP_EVENT,
        {},
        {"serving": server.name, "version": gen.version, "partition": index, "step": step},
    )


async def _roll_back(
    server: SwapHost, new: Generation, old: Generation, replaced: list[int]
) -> None:
    """Put the old version back on the partitions ``replaced`` (latest first), then stop
    ``new``. A partition of the old version that fails to load again raises."""
    for index in reversed(replaced):
        out = next(s for s in new.slots if s.index == index)
        try:
            slot = await old.restore(index)
        except Exception as exc:
            raise RuntimeError(
                f"serving '{server.name}': swap to version '{new.version}' failed and could "
                f"not be rolled back: partition {index} of version '{old.version}' did not "
                f"load again: {exc!r}"
            ) from exc
        await _replace(server, old, slot, new, out)
    if replaced:
        server.versions.restore(old, new)
        await server.versions.retire(new)
    else:
        await new.stop()
