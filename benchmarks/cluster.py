"""Benchmarks of corral on a Ray cluster against Ray Serve and against local port partitions.

    python benchmarks/cluster.py [--quick] [--loop uvloop|asyncio] [--verbose]
                                 [--cases serve,port] [--address HOST:PORT]

Starts a Ray cluster of its own on this machine (``ray.cluster_utils.Cluster``: a head and
one worker raylet, 2 logical CPUs each, no dashboard) unless ``--address`` names one, and
connects to it in corral's namespace. Prints one JSON object per line (``_common.emit``);
progress goes to stderr. ``--quick``: 3 interleaved repeats of 1.5 s per side; else 5 of 5 s.

The workload is benchmarks/serving.py's tiny MLP (64->256->256->10, float32,
``OPENBLAS_NUM_THREADS=1``, in the driver and in every Ray worker): 64 closed-loop caller
tasks on this process's loop, one sample per request, batches of up to 64 cut after 2 ms.
Both sides of a case run at once in one node (or one cluster) and are measured in turns
(``_common.interleaved``), so the machine's noise hits both alike; each line gives medians,
``ratio`` is the median of the per-repeat ratios, with ``p50_ms``/``p99_ms`` of each side.

Cases (``CASES``: one row each; a case is an async function of the settings and the cluster)
-----
``tiny_mlp_ray_vs_serve`` (group ``serve``)
    corral, ``Serving(kind="ray", partitions=2)`` (one Ray call per batch) against a Ray
    Serve deployment of the same model with 2 replicas and ``@serve.batch(max_batch_size=64,
    batch_wait_timeout_s=0.002)``, called through its ``DeploymentHandle`` (no HTTP),
    ``max_ongoing_requests=64`` per replica so that batches can fill. Target: >= 50x Ray
    Serve's throughput. Needs Ray Serve's own dependencies (the ``bench`` extra, which
    ``make bench-quick`` installs); without them the line says ``skipped`` with the reason.
``tiny_mlp_ray_vs_port`` (group ``port``)
    The same corral serving with ``kind="ray"`` against ``kind="port"`` (2 local worker
    processes). Target: >= 0.3x.

A missed target is reported (``target_met: false``), never an error.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy is imported
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse
import asyncio
import contextlib
import sys
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _cluster_train import case as train_case
from _common import (
    Settings,
    emit,
    interleaved,
    loop_factory,
    median,
    parse_settings,
    percentile,
    say,
)
from _serving_load import BATCH, HERE, Load, port_options
from _serving_models import tiny_mlp
from corral import Node
from corral.serving import Serving

BENCH = "cluster"
WIDTH = 64
BATCH_TIMEOUT = 0.002
PARTITIONS = 2
FACTORY = "_serving_models:tiny_mlp"
WORKER_ENV = {"OPENBLAS_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Cluster:
    """The cluster the cases run on: its address, and how many nodes it has."""

    address: str
    nodes: int


@dataclass(frozen=True)
class Case:
    """One row of ``CASES``: ``name`` is the group ``--cases`` picks, ``run`` the case."""

    name: str
    run: Callable[[Settings, Cluster], Awaitable[None]]


# -- measuring -----------------------------------------------------------------------------


def ray_serving(name: str) -> Serving:
    """The tiny MLP on ``PARTITIONS`` Ray-actor partitions, spread over the nodes."""
    return Serving(
        FACTORY,
        name=name,
        kind="ray",
        partitions=PARTITIONS,
        batch_size=BATCH,
        batch_timeout=BATCH_TIMEOUT,
        max_queue=4096,
        num_cpus=1,
        ray_options={"scheduling_strategy": "SPREAD", "runtime_env": {"env_vars": WORKER_ENV}},
    )


def port_serving(name: str) -> Serving:
    return Serving(
        FACTORY,
        name=name,
        kind="port",
        partitions=PARTITIONS,
        batch_size=BATCH,
        batch_timeout=BATCH_TIMEOUT,
        max_queue=4096,
        port_options=port_options(spares=0),
    )


def side(target: Any, seconds: float) -> Callable[[], Awaitable[dict[str, float]]]:
    """One measurement of ``target`` (anything with ``run(x)``) under the closed load."""

    async def measure() -> dict[str, float]:
        load = Load(target, WIDTH)
        rate = await load.run_for(seconds)
        lat = load.latencies or [float("nan")]
        return {
            "rate": rate,
            "p50_ms": percentile(lat, 50) * 1e3,
            "p99_ms": percentile(lat, 99) * 1e3,
            "failed": float(load.failed),
        }

    return measure


def report(
    settings: Settings,
    case: str,
    runs: list[dict[str, float]],
    base: list[dict[str, float]],
    *,
    baseline_name: str,
    target: float,
    **extra: object,
) -> None:
    ratios = [run["rate"] / b["rate"] for run, b in zip(runs, base, strict=True)]
    ratio = median(ratios)

    def mid(side: list[dict[str, float]], key: str) -> float:
        return median([run[key] for run in side])

    emit(
        bench=BENCH,
        case=case,
        metric="throughput",
        value=mid(runs, "rate"),
        unit="req/s",
        baseline_name=baseline_name,
        baseline_value=mid(base, "rate"),
        loop=settings.loop,
        ratio=ratio,
        ratios=[round(r, 4) for r in ratios],
        p50_ms=mid(runs, "p50_ms"),
        p99_ms=mid(runs, "p99_ms"),
        baseline_p50_ms=mid(base, "p50_ms"),
        baseline_p99_ms=mid(base, "p99_ms"),
        failed=sum(run["failed"] for run in runs),
        baseline_failed=sum(run["failed"] for run in base),
        repeats=len(runs),
        target=target,
        target_met=ratio >= target,
        **extra,
    )
    verdict = "met" if ratio >= target else "MISSED"
    say(f"{case}: {ratio:.3f}x (target >= {target}x: {verdict})")


def seconds_of(settings: Settings) -> float:
    return 1.5 if settings.quick else 5.0


# -- cases ---------------------------------------------------------------------------------


class ServeSide:
    """Ray Serve's deployment handle as a load target."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def run(self, x: np.ndarray) -> Awaitable[object]:
        return self.handle.remote(x)  # type: ignore[no-any-return]


def deploy_ray_serve() -> Any:
    """Deploy the tiny MLP on Ray Serve (2 replicas, @serve.batch 64 / 2 ms); its handle."""
    from ray import serve

    @serve.deployment(
        num_replicas=PARTITIONS,
        max_ongoing_requests=BATCH,
        ray_actor_options={"num_cpus": 1, "runtime_env": {"env_vars": WORKER_ENV}},
    )
    class TinyMlp:
        def __init__(self) -> None:
            self.model = tiny_mlp()

        @serve.batch(max_batch_size=BATCH, batch_wait_timeout_s=BATCH_TIMEOUT)
        async def __call__(self, xs: list[np.ndarray]) -> list[np.ndarray]:
            return list(self.model(np.stack(xs)))

    serve.start(http_options={"location": "NoServer"})
    return serve.run(TinyMlp.bind(), name="corral-bench", route_prefix=None)


async def serve_case(settings: Settings, cluster: Cluster) -> None:
    case = "tiny_mlp_ray_vs_serve"
    try:
        from ray import serve
    except ImportError as exc:
        say(f"{case}: skipped: Ray Serve is not importable ({exc})")
        emit_skipped(settings, case, f"Ray Serve is not importable: {exc}")
        return
    handle = await asyncio.to_thread(deploy_ray_serve)
    try:
        serving = ray_serving("bench-ray")
        async with Node([serving.child_spec()]):
            seconds = seconds_of(settings)
            ours, theirs = await interleaved(
                [side(serving, seconds), side(ServeSide(handle), seconds)], settings.repeats
            )
            stats = serving.statistics()
    finally:
        await asyncio.to_thread(serve.shutdown)
    report(
        settings,
        case,
        ours,
        theirs,
        baseline_name=f"Ray Serve, {PARTITIONS} replicas, @serve.batch({BATCH}, 2 ms), handle",
        target=50.0,
        mean_batch_size=stats.mean_batch_size,
        nodes=cluster.nodes,
    )


async def port_case(settings: Settings, cluster: Cluster) -> None:
    ray_side = ray_serving("bench-ray")
    port_side = port_serving("bench-port")
    async with Node([ray_side.child_spec(), port_side.child_spec()]):
        seconds = seconds_of(settings)
        ours, theirs = await interleaved(
            [side(ray_side, seconds), side(port_side, seconds)], settings.repeats
        )
        stats = ray_side.statistics()
    report(
        settings,
        "tiny_mlp_ray_vs_port",
        ours,
        theirs,
        baseline_name=f"corral kind='port', {PARTITIONS} local worker processes",
        target=0.3,
        mean_batch_size=stats.mean_batch_size,
        nodes=cluster.nodes,
    )


def emit_skipped(settings: Settings, case: str, reason: str) -> None:
    emit(
        bench=BENCH,
        case=case,
        metric="throughput",
        value=float("nan"),
        unit="req/s",
        baseline_name="(not measured)",
        baseline_value=float("nan"),
        loop=settings.loop,
        ratio=float("nan"),
        skipped=reason,
    )


CASES: tuple[Case, ...] = (
    Case("serve", serve_case),
    Case("port", port_case),
    Case("train", train_case),
)
"""Every case, in run order. A new case is one more row."""


# -- the cluster ---------------------------------------------------------------------------


@contextlib.contextmanager
def cluster_at(address: str | None) -> Iterator[Cluster]:
    """Connect to ``address``, or start a head and a worker raylet here and stop them after."""
    import ray

    from corral.cluster import connect, disconnect

    # Ray's workers import the models (benchmarks/) and whatever this process imports from
    # its PYTHONPATH (a checkout's src/, say).
    own = os.environ.get("PYTHONPATH")
    path = str(HERE) if not own else f"{HERE}{os.pathsep}{own}"
    env = {"env_vars": {"PYTHONPATH": path, **WORKER_ENV}}
    if address is not None:
        connect(address, runtime_env=env)
        try:
            yield Cluster(address, len(ray.nodes()))
        finally:
            disconnect()
        return
    from ray.cluster_utils import Cluster as RayCluster

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        local = RayCluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 2,
                "include_dashboard": False,
                "object_store_memory": 128 * 1024 * 1024,
            },
        )
    try:
        local.add_node(num_cpus=2, object_store_memory=128 * 1024 * 1024)
        local.wait_for_nodes()
        connect(local.address, runtime_env=env)
        say(f"cluster: a head and a worker raylet up in {time.perf_counter() - started:.1f} s")
        yield Cluster(local.address, 2)
    finally:
        disconnect()
        local.shutdown()


def parse_args(argv: list[str]) -> tuple[frozenset[str], str | None, list[str]]:
    names = [case.name for case in CASES]
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--cases", default=",".join(names))
    parser.add_argument("--address", default=None)
    args, rest = parser.parse_known_args(argv)
    picked = frozenset(c for c in args.cases.split(",") if c)
    if not picked or not picked <= set(names):
        parser.error(f"--cases: comma-separated groups of {', '.join(names)}; got {args.cases!r}")
    return picked, args.address, rest


async def main(settings: Settings, picked: frozenset[str], cluster: Cluster) -> None:
    for case in CASES:
        if case.name in picked:
            started = time.perf_counter()
            await case.run(settings, cluster)
            say(f"-- {case.name}: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    picked, address, argv = parse_args(sys.argv[1:])
    settings = parse_settings(__doc__.splitlines()[0], argv)
    with (
        cluster_at(address) as cluster,
        asyncio.Runner(loop_factory=loop_factory(settings.loop)) as runner,
    ):
        runner.run(main(settings, picked, cluster))
