"""One behaviour suite for servings, run on every partition kind: 'thread' (a thread of this
process), 'port' (a worker OS process) and 'ray' (a Ray actor on the session's cluster).

The same model code (importable 'module:attr' factories) gives the same outputs, deadlines,
error isolation and hot swap with no failed request, whichever kind runs it. Real time: the
port and ray kinds run real processes.
"""

from __future__ import annotations

import asyncio
import functools

import numpy as np
import pytest
from cluster_models import sleepy_double

from corral import ActorCallError, DeadlineExceeded, Node, PortCallError
from corral.serving import Serving

pytestmark = pytest.mark.realtime

KINDS = ["thread", "port", "ray"]

MODEL_ERRORS: dict[str, type[Exception]] = {
    "thread": ValueError,
    "port": PortCallError,
    "ray": ActorCallError,
}


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
    return str(request.param)


def serving(kind: str, factory: object, name: str, **options: object) -> Serving:
    if kind == "ray":
        options.setdefault("num_cpus", 0.5)
    return Serving(factory, name=name, kind=kind, **options)  # type: ignore[arg-type]


def row(i: float) -> np.ndarray:
    return np.array([i, i + 0.5], dtype=np.float32)


async def test_every_kind_gives_the_same_outputs(kind: str) -> None:
    s = serving(kind, "serving_models:double", f"same-{kind}", batch_size=8, partitions=2)
    async with Node([s.child_spec()]):
        results = await asyncio.gather(*[s.run(row(i)) for i in range(40)])
        batch = await s.run_batch(np.stack([row(100), row(101)]))
        stats = s.statistics()
    assert [r.output.tolist() for r in results] == [[2 * i, 2 * i + 1] for i in range(40)]
    assert {r.version for r in results} == {"1"}
    assert batch.output.tolist() == [[200, 201], [202, 203]]
    assert (stats.completed, stats.failed) == (41, 0)
    assert [p.kind for p in stats.partitions] == [kind, kind]


async def test_a_request_past_its_deadline_fails_with_deadline_exceeded_on_every_kind(
    kind: str,
) -> None:
    # The model takes 0.5 s per batch: a 0.05 s deadline passes while it runs.
    slow = functools.partial(sleepy_double, 0.5)
    s = serving(kind, slow, f"deadline-{kind}", batch_size=4, batch_timeout=0.0)
    async with Node([s.child_spec()]):
        with pytest.raises(DeadlineExceeded):
            await s.run(row(1), deadline=0.05)
        result = await s.run(row(2), deadline=30.0)
        stats = s.statistics()
    assert result.output.tolist() == [4, 5]
    assert (stats.completed, stats.expired) == (1, 1)


async def test_a_model_error_fails_only_the_requests_that_cause_it_on_every_kind(
    kind: str,
) -> None:
    s = serving(kind, "cluster_models:picky_double", f"isolate-{kind}", batch_size=8)
    async with Node([s.child_spec()]):
        results = await asyncio.gather(
            *[s.run(row(-1.0 if i == 5 else float(i))) for i in range(8)],
            return_exceptions=True,
        )
        stats = s.statistics()
    error = results[5]
    assert isinstance(error, MODEL_ERRORS[kind])
    assert "negative sample" in str(error)
    assert [r.output.tolist() for i, r in enumerate(results) if i != 5] == [  # type: ignore[union-attr]
        [2 * i, 2 * i + 1] for i in range(8) if i != 5
    ]
    assert (stats.completed, stats.failed) == (7, 1)
    assert all(p.crashes == 0 for p in stats.partitions)


async def test_a_swap_under_load_fails_no_request_on_every_kind(kind: str) -> None:
    s = serving(kind, "serving_models:double", f"swap-{kind}", batch_size=4, partitions=1)
    async with Node([s.child_spec()]):
        swapped = asyncio.Event()
        answers: list[tuple[float, float, str]] = []

        async def caller(i: int) -> None:
            j = 0
            while not swapped.is_set() or j < 3:
                x = float(i * 1000 + j)
                result = await s.run(row(x))
                answers.append((x, float(result.output[0]), result.version))
                j += 1

        callers = [asyncio.create_task(caller(i)) for i in range(8)]
        await s.swap("serving_models:triple", version="2", warmup=row(0))
        swapped.set()
        await asyncio.gather(*callers)
        stats = s.statistics()
    assert stats.failed == 0 and stats.version == "2"
    assert all(out == x * (2 if version == "1" else 3) for x, out, version in answers)
    assert {version for _, _, version in answers[-8:]} == {"2"}


def test_a_ray_serving_refuses_a_factory_its_actors_cannot_import() -> None:
    with pytest.raises(ValueError, match="must be importable by the worker process"):
        Serving(lambda: lambda b: b, name="no-lambdas", kind="ray")
