"""Hot swap: load a new model version beside the old one, warm it, flip, drain, stop the old.

``run_swap`` runs as a task of the server (so the new partitions supervisor is linked to the
server). Steps:

1. start the new version's partitions (all at once; each loads its model);
2. warm up: run ``warmup`` (one sample) through every new partition, all at once; an error
   or a partition failing to start stops the new partitions and raises ``SwapFailed``
   (rolled back: the old version never stopped serving);
3. flip: batches cut from now on go to the new version (one assignment, between two batches);
4. drain: wait until the old version's running batches finish (their results carry the old
   version), then stop its partitions.

No request fails because of a swap: queued requests wait for the flip like any others, and
a batch of the old version whose partition dies is retried on the new one.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

import numpy as np

from corral import telemetry
from corral.errors import SwapFailed
from corral.serving.runners import Crashed, ModelFailed

if TYPE_CHECKING:
    from corral.serving.factory import ModelFactory
    from corral.serving.generation import Generation
    from corral.serving.policy import BatchPolicy
    from corral.serving.versions import Versions

__all__ = ["SWAP_EVENT", "SwapHost", "run_swap"]

SWAP_EVENT = ("corral", "serving", "swapped")


class SwapHost(Protocol):
    """What a swap needs of the server running it (``ServingServer`` is one)."""

    name: str
    policy: BatchPolicy
    versions: Versions

    async def start_generation(self, factory: ModelFactory, version: str) -> Generation: ...

    def pump(self) -> None: ...


async def run_swap(server: SwapHost, factory: ModelFactory, version: str, warmup: object) -> None:
    """Swap ``server`` to ``factory`` as ``version``; raises ``SwapFailed`` on rollback.
    Cancelling it before the flip stops the new partitions; after, the drain goes on."""
    name = server.name
    new: Generation | None = None
    try:
        new = await server.start_generation(factory, version)
        if warmup is not None:
            batch = np.expand_dims(np.asarray(warmup), 0)
            padded = server.policy.padded_size(1)
            if padded > 1:
                pad = np.zeros((padded - 1, *batch.shape[1:]), batch.dtype)
                batch = np.concatenate([batch, pad])
            # Every partition warms at once, through the runner that will run its batches.
            outcomes = await asyncio.gather(*(slot.runner.run_once(batch) for slot in new.slots))
            for out in outcomes:
                if isinstance(out, ModelFailed | Crashed):
                    raise out.error
    except BaseException as exc:
        if new is not None:
            await new.stop()
        if isinstance(exc, Exception):
            telemetry.emit((*SWAP_EVENT, "failed"), {}, {"serving": name, "version": version})
            raise SwapFailed(name, version, exc) from exc
        raise
    old = server.versions.flip(new)
    server.pump()
    telemetry.emit(
        SWAP_EVENT,
        {},
        {"serving": name, "version": version, "previous": None if old is None else old.version},
    )
    if old is not None:
        await server.versions.retire(old)
