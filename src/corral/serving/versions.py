"""The model versions of one serving: the current one and those retiring after a swap.

``current`` takes every batch cut from now on; ``retired`` versions only finish the batches
they are running, then stop. ``flip`` is the swap's one atomic step (between two batches);
``retire`` drains an old version and stops it. Runs on the server's loop.
"""

from __future__ import annotations

from collections.abc import Iterator

from corral.runtime.process import Pid
from corral.serving.generation import Generation

__all__ = ["Versions"]


class Versions:
    """The current version and the retiring ones (see the module docstring)."""

    def __init__(self) -> None:
        self.current: Generation | None = None
        self.retired: list[Generation] = []

    def __iter__(self) -> Iterator[Generation]:
        """Every version with partitions: the current one first."""
        if self.current is not None:
            yield self.current
        yield from self.retired

    def flip(self, new: Generation) -> Generation | None:
        """Make ``new`` current; the old current (returned) is retired."""
        old = self.current
        self.current = new
        if old is not None:
            self.retired.append(old)
        return old

    async def retire(self, old: Generation) -> None:
        """Wait for ``old``'s running batches, then stop its partitions."""
        await old.drain()
        await old.stop()
        self.retired.remove(old)

    def owning(self, supervisor: Pid) -> Generation | None:
        """The live version whose partitions ``supervisor`` supervises."""
        for gen in self:
            if gen.supervisor is supervisor and not gen.stopping:
                return gen
        return None

    async def stop(self) -> None:
        """Stop every version's partitions."""
        for gen in list(self):
            await gen.stop()
