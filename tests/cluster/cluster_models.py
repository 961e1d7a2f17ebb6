"""Actor classes the Ray workers import (tests/cluster is on their PYTHONPATH)."""

from __future__ import annotations

import os

from corral.cluster import WatchedActor


class Echo(WatchedActor):
    """Answers with its OS process id and node id; ``fail=True`` makes its constructor
    raise."""

    def __init__(self, tag: str = "", *, fail: bool = False) -> None:
        if fail:
            raise RuntimeError(f"Echo {tag}: refusing to start")
        self.tag = tag

    def where(self) -> tuple[int, str]:
        import ray

        return os.getpid(), ray.get_runtime_context().get_node_id()

    def echo(self, value: object) -> object:
        return value
