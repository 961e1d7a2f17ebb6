"""The model versions of one serving: the current one and those retiring after a swap.

``current`` takes every batch cut from now on; ``retired`` versions only finish the batches
they are running, then stop. ``flip`` is an all-at-once swap's one atomic step (between two
batches); ``retire`` drains an old version and stops it. A rolling swap has two versions
take batches for a while: ``join`` makes the new one current beside the old one, which
keeps serving on the partitions it has left, until ``leave`` (or ``restore``, when the swap
rolls back) takes it out. ``serving`` lists the versions batches are cut for. Runs on the
server's loop.
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
        self.serving: list[Generation] = []
        """The versions batches are cut for: the current one, and during a rolling swap
        the old one too (on the partitions it has left)."""

    def __iter__(self) -> Iterator[Generation]:
        """Every version with partitions: the current one first."""
        if self.current is not None:
            yield self.current
        yield from self.retired

    def flip(self, new: Generation) -> Generation | None:
        """Make ``new`` current, the only version that takes batches; the old current
        (returned) is retired."""
        old = self.current
        self.current = new
        self.serving = [new]
        if old is not None:
            self.retired.append(old)
        return old

    def join(self, new: Generation) -> Generation | None:
        """Make ``new`` current beside the old current (returned), which goes on taking
        batches on its partitions in service (a rolling swap), retired all the same."""
        old = self.current
        self.current = new
        self.serving = [new, *self.serving]
        if old is not None:
            self.retired.append(old)
        return old

    def leave(self, old: Generation) -> None:
        """``old`` takes no more batches (a rolling swap replaced all its partitions)."""
        self.serving.remove(old)

    def restore(self, old: Generation, new: Generation) -> None:
        """Undo ``join``: ``old`` is the current version again, the only one serving, and
        ``new`` is retired (to be stopped)."""
        self.retired.remove(old)
        self.current = old
        self.serving = [old]
        self.retired.append(new)

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
