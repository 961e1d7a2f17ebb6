"""How a stage ends messages: ``handle_failed`` for the failed ones, the dead-letter sink,
then one ``ack`` per acknowledger. Every message passes through here exactly once."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from corral.pipeline.message import Acknowledger, Message

if TYPE_CHECKING:
    from corral.pipeline.producer import DeadLetterSink
    from corral.pipeline.stages.hooks import StageHooks

__all__ = ["Ender", "group_by_acknowledger"]

logger = logging.getLogger("corral.pipeline")

_Group = tuple[Acknowledger, list[Message], list[Message]]


def group_by_acknowledger(successful: Sequence[Message], failed: Sequence[Message]) -> list[_Group]:
    """Split the messages by acknowledger (by identity), keeping their order: one
    ``(acknowledger, successful, failed)`` per acknowledger, in order of first appearance."""
    first = (successful[0] if successful else failed[0]).acknowledger
    # The usual case, one acknowledger for all, checked without a Python-level loop.
    # (``count`` compares by identity first; an acknowledger with an ``__eq__`` that
    # claims equality to another object would merge them, which is what it asked for.)
    ackers = [m.acknowledger for m in successful]
    ackers += [m.acknowledger for m in failed]
    if ackers.count(first) == len(ackers):
        return [(first, list(successful), list(failed))]
    groups: dict[int, _Group] = {}
    for m in successful:
        _group_of(groups, m.acknowledger)[1].append(m)
    for m in failed:
        _group_of(groups, m.acknowledger)[2].append(m)
    return list(groups.values())


def _group_of(groups: dict[int, _Group], acker: Acknowledger) -> _Group:
    group = groups.get(id(acker))
    if group is None:
        group = groups[id(acker)] = (acker, [], [])
    return group


class Ender:
    """Ends messages for one stage; ``where`` names the stage in logs, ``stage`` in
    ``pipeline.statistics()`` (``"processor.default"``: its kind and name, no index)."""

    __slots__ = ("_context", "_counter", "_dead_letter", "_handle_failed", "_where")

    def __init__(self, hooks: StageHooks, where: str, *, stage: str) -> None:
        self._handle_failed = hooks.handle_failed
        self._dead_letter: DeadLetterSink | None = hooks.dead_letter
        self._context = hooks.context
        self._where = where
        counters = hooks.counters
        self._counter = None if counters is None else counters.stage(stage)

    async def end(self, successful: list[Message], failed: list[Message]) -> None:
        """Run ``handle_failed`` and the dead-letter sink on ``failed``, then ack all.

        Runs in the calling stage's task and waits for every hook and ``ack``. A hook or an
        ``ack`` that raises is logged; the messages still count as ended (``failed``
        keeps the messages as they were given when ``handle_failed`` breaks its contract).
        """
        if failed:
            failed = await self._run_handle_failed(failed)
            if self._dead_letter is not None:
                await self._send_dead_letters(failed)
        if not successful and not failed:
            return
        counter = self._counter
        if counter is not None:
            counter.acked += len(successful)
            counter.failed += len(failed)
        for acker, ok, bad in group_by_acknowledger(successful, failed):
            try:
                result = acker.ack(ok, bad)
                if result is not None and inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception(
                    "%s: acknowledger %r raised on ack of %d successful, %d failed messages",
                    self._where,
                    acker,
                    len(ok),
                    len(bad),
                )

    async def _run_handle_failed(self, failed: list[Message]) -> list[Message]:
        try:
            result = self._handle_failed(failed, self._context)
            if inspect.isawaitable(result):
                result = await result
        except Exception:
            logger.exception("%s: Pipeline.handle_failed raised; acking as failed", self._where)
            return failed
        if not isinstance(result, Sequence) or len(result) != len(failed):
            count = len(result) if isinstance(result, Sequence) else repr(result)
            logger.error(
                "%s: Pipeline.handle_failed returned %s messages for %d failed ones; it must "
                "return every message it was given; using them as they were",
                self._where,
                count,
                len(failed),
            )
            return failed
        return [m if isinstance(m, Message) else failed[i] for i, m in enumerate(result)]

    async def _send_dead_letters(self, failed: list[Message]) -> None:
        assert self._dead_letter is not None
        try:
            result = self._dead_letter(list(failed))
            if result is not None and inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("%s: dead-letter sink raised on %d messages", self._where, len(failed))
