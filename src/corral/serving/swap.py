"""Hot swap: load a new model version beside the old one, warm it, flip, drain, stop the old.

``run_swap`` runs as a task of the server (so the new partitions supervisor is linked to the
server). Steps:

1. start the new version's partitions (all at once; each loads its model);
2. warm up: run ``warmup`` (one sample; with sequence buckets, one batch per bucket, the
   sample cut or padded to each length) through every new partition, all at once; an error
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

from corral import telemetry
from corral.errors import SwapFailed
from corral.serving.runners import Crashed, ModelFailed, Runner

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

    def warmup_batches(self, warmup: object) -> list[object]: ...

    def pump(self) -> None: ...


async def run_swap(server: SwapHost, factory: ModelFactory, version: str, warmup: object) -> None:
    """Swap ``server`` to ``factory`` as ``version``; raises ``SwapFailed`` on rollback.
    Cancelling it before the flip stops the new partitions; after, the drain goes on."""
    name = server.name
    new: Generation | None = None
    try:
        new = await server.start_generation(factory, version)
        if warmup is not None:
            # One batch per sequence bucket (one batch without buckets); every partition
            # warms at once, through the runner that will run its batches.
            batches = server.warmup_batches(warmup)
            outcomes = await asyncio.gather(*(_warm(slot.runner, batches) for slot in new.slots))
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


async def _warm(runner: Runner, batches: list[object]) -> object:
    """Run ``batches`` on ``runner`` one after another; the first failure, else None."""
    for batch in batches:
        out = await runner.run_once(batch)  # type: ignore[arg-type]
        if isinstance(out, ModelFailed | Crashed):
            return out
    return None
