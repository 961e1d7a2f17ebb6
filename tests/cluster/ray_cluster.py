"""The session's Ray cluster (see conftest.py): a head and one worker raylet.

``start_cluster`` starts ``ray.cluster_utils.Cluster`` (the ``ray_cluster`` fixture does,
once per session, the first time a test asks for it) and connects this process to it in
corral's namespace; every Ray test shares it (starting one costs ~10 s). Node loss is fast
to detect here (Ray's health check every 0.5 s, 3 misses), so a removed node's actors are
declared dead within ~2 s.

``ray_cluster.add_worker()`` starts one more worker raylet and returns its node (place
actors there with ``prefer(node)``: a soft node affinity, so that they are re-created on the
other nodes once it is gone); ``remove_worker(node)`` kills it without grace. A test that
adds a node removes it.

Workers find the tree's sources and the tests' model modules through the job's
``runtime_env`` (``PYTHONPATH``: ``src/``, ``tests/serving``, ``tests/train``,
``tests/cluster``), which works both with the editable install CI has and in a bare
checkout.

Without ray the tests skip with a reason, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
WORKER_PATHS = (
    ROOT / "src",
    ROOT / "tests" / "serving",
    ROOT / "tests" / "train",
    ROOT / "tests" / "cluster",
)
OBJECT_STORE = 128 * 1024 * 1024
HEAD_CPUS = 4
WORKER_CPUS = 4
FAST_NODE_DEATH = {"health_check_period_ms": 500, "health_check_failure_threshold": 3}


def worker_pythonpath() -> str:
    """``PYTHONPATH`` for Ray workers: the tree's sources and the tests' model modules, then
    whatever this process had."""
    entries = [str(p) for p in WORKER_PATHS]
    own = os.environ.get("PYTHONPATH")
    return os.pathsep.join([*entries, own] if own else entries)


def require_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"ray is not importable ({exc}): CI must have it", pytrace=False)
        pytest.skip(f"ray is not installed ({exc}); pip install 'corral[ray]' to run this")
    return ray


@dataclass
class RayCluster:
    """The session's cluster: ``address``, the ``head`` and ``worker`` node ids."""

    cluster: Any
    address: str
    head: str
    worker: str

    def add_worker(self, num_cpus: int = 2) -> Any:
        """Start one more worker raylet; waits until it has joined."""
        node = self.cluster.add_node(num_cpus=num_cpus, object_store_memory=OBJECT_STORE)
        self.cluster.wait_for_nodes()
        return node

    def remove_worker(self, node: Any) -> None:
        """Kill ``node``'s raylet and its workers at once (no grace)."""
        self.cluster.remove_node(node, allow_graceful=False)


def start_cluster() -> RayCluster:
    """Start the cluster (blocks ~10 s) and connect this process to it in corral's
    namespace."""
    from ray.cluster_utils import Cluster

    from corral.cluster import connect

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": HEAD_CPUS,
                "include_dashboard": False,
                "object_store_memory": OBJECT_STORE,
                "_system_config": FAST_NODE_DEATH,
            },
        )
    try:
        worker = cluster.add_node(num_cpus=WORKER_CPUS, object_store_memory=OBJECT_STORE)
        cluster.wait_for_nodes()
        connect(cluster.address, runtime_env={"env_vars": {"PYTHONPATH": worker_pythonpath()}})
    except BaseException:
        cluster.shutdown()
        raise
    return RayCluster(
        cluster=cluster,
        address=cluster.address,
        head=cluster.head_node.node_id,
        worker=worker.node_id,
    )


def stop_cluster(cluster: RayCluster) -> None:
    """Disconnect and stop every process of the cluster."""
    from corral.cluster import disconnect

    disconnect()
    cluster.cluster.shutdown()


def prefer(node: Any) -> object:
    """A soft node affinity for ``node``: Ray places the actor there while it lives, and
    anywhere else after."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=node.node_id, soft=True)
