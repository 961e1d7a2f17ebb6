"""``Trainer``: data-parallel training that averages what supervised workers learn.

::

    async with Node():
        async with Trainer(data, model="corral.train:LinearRegression",
                           model_args={"features": 10}, workers=4) as trainer:
            result = await trainer.fit(rounds=20)

Entering the trainer cuts ``data`` into ``workers`` contiguous shards, writes each shard's
columns as ``.npy`` files (the only time the data moves: workers map them read-only), and
starts the workers under one supervisor (``corral.train.workers``). Each round of ``fit``
sends every worker the current parameters, lets it train its shard for ``local_epochs``
with a seed derived from (``seed``, round, worker), and averages the returned parameters
weighted by shard rows (and, for a ``SparseModel``'s embedding tables, row by row, by the
rows of each shard that touch them). A worker that dies mid-round is restarted by its supervisor and
its shard re-run for that round, with the same seed, so the round's result does not change.
After every round the parameters (and optimizer state) and the round number go to the
``checkpoint`` file; ``fit`` resumes from it when it exists.

``backend="ray"`` runs the workers as Ray actors on a cluster instead
(``corral.cluster.training``): the shards go through Ray's object store, the gang sits in
one placement group of ``num_cpus`` per worker, and a lost worker makes its ``one_for_all``
supervisor re-create the whole gang, whose round re-runs from its starting parameters.

Telemetry (see ``docs/training.md``): ``("corral", "train", "round")`` after every round and
``("corral", "train", "resumed")`` when ``fit`` starts from a checkpoint.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final

import numpy as np

from corral import telemetry
from corral.errors import TrainingFailed
from corral.runtime.context import get_node
from corral.train import checkpoint
from corral.train.averaging import weighted_average
from corral.train.model import Data, Parameters, SparseModel, StatefulModel, load_model, rows
from corral.train.options import TrainerOptions
from corral.train.rounds import Reply, parse_reply, round_seed
from corral.train.sharding import split
from corral.train.sync import (
    GradientModel,
    Gradients,
    combine_gradients,
    decode_gradients,
    steps_per_epoch,
)
from corral.train.workers import PortWorkers

if TYPE_CHECKING:
    from corral.cluster.training import RayWorkers

__all__ = ["RESUMED_EVENT", "ROUND_EVENT", "RoundStats", "TrainResult", "Trainer"]

ROUND_EVENT: Final = ("corral", "train", "round")
RESUMED_EVENT: Final = ("corral", "train", "resumed")


@dataclass(frozen=True)
class RoundStats:
    """One round: weighted mean training ``loss`` of the workers, held-out ``metrics``
    (empty without ``eval_data``), ``samples`` processed (rows x local epochs), worker
    ``restarts`` during the round and its ``duration`` in seconds."""

    round: int
    loss: float
    metrics: dict[str, float]
    samples: int
    restarts: int
    duration: float


@dataclass(frozen=True)
class TrainResult:
    """What ``fit`` returns: the final ``parameters``, the number of ``rounds`` completed
    (resumed ones included) and the ``history`` of the rounds this call ran."""

    parameters: Parameters
    rounds: int
    history: list[RoundStats] = field(default_factory=list)


class Trainer:
    """Data-parallel trainer over supervised workers: port processes, or Ray actors with
    ``backend="ray"`` (see the module doc).

    Options are ``TrainerOptions`` fields (validated here, ``ValueError`` naming the
    option). ``eval_data`` is evaluated here after every round, in the event loop's thread
    (it blocks the loop for that long). Use from inside a running ``Node``.
    """

    def __init__(
        self, data: Data, *, eval_data: Data | None = None, name: str = "trainer", **options: object
    ) -> None:
        self.options = TrainerOptions.from_kwargs(options, what=f"trainer '{name}'")
        self.name = name
        n = rows(data)
        if n < self.options.workers:
            raise ValueError(
                f"invalid options for trainer '{name}': workers must be at most "
                f"the data's {n} rows; got {self.options.workers}"
            )
        if self.options.shard_by is not None and self.options.shard_by not in data:
            raise ValueError(
                f"invalid options for trainer '{name}': shard_by must be a column of the "
                f"data ({', '.join(data)}); got {self.options.shard_by!r}"
            )
        self._data = data
        self._eval = eval_data
        self._model = load_model(self.options.model, self.options.model_args)
        if self.options.sync == "gradients" and not isinstance(self._model, GradientModel):
            raise TypeError(
                f"trainer '{name}': sync='gradients' needs a model with batch_size, "
                f"batch_gradients and apply_gradients; got {type(self._model).__qualname__}"
            )
        self._pool: PortWorkers | RayWorkers | None = None
        self._tmp: str | None = None
        self._sizes: list[int] = []
        self._row_counts: list[Parameters] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Cut the shards and start the workers; blocks until every worker is ready
        (``StartError`` if one fails its setup). With ``backend="ports"`` the shards are
        written as files first; with ``backend="ray"`` they go to Ray's object store, and
        connecting to ``ray_address`` (when this process is not connected yet) blocks the
        loop too."""
        opts = self.options
        shards = split(self._data, opts.workers, by=opts.shard_by)
        self._sizes = [rows(shard) for shard in shards]
        if isinstance(self._model, SparseModel):
            self._row_counts = [self._model.row_counts(shard) for shard in shards]
        if opts.backend == "ray":
            self._pool = self._ray_workers(shards)
        else:
            self._pool = self._port_workers(shards)
        await self._pool.start()

    def _port_workers(self, shards: Sequence[Data]) -> PortWorkers:
        opts = self.options
        base = opts.data_dir
        if base is None:
            base = self._tmp = tempfile.mkdtemp(prefix="corral-train-")
        dirs = []
        for k, shard in enumerate(shards):
            d = Path(base) / f"worker-{k}"
            d.mkdir(parents=True, exist_ok=True)
            for column, values in shard.items():
                np.save(d / f"{column}.npy", np.ascontiguousarray(values), allow_pickle=False)
            dirs.append(str(d))
        return PortWorkers(
            get_node(),
            repr(self.name),
            model=opts.model,
            model_args=opts.model_args,
            shard_dirs=dirs,
            max_restarts=opts.max_restarts,
            max_seconds=opts.max_seconds,
            round_timeout=opts.round_timeout,
            port_options=dict(opts.port_options or {}),
        )

    def _ray_workers(self, shards: Sequence[Data]) -> RayWorkers:
        # The cluster layer sits above training: imported only when asked for.
        from corral.cluster.actors import connect, connected
        from corral.cluster.training import RayWorkers

        opts = self.options
        if not connected():
            connect(opts.ray_address)
        return RayWorkers(
            get_node(),
            repr(self.name),
            model=opts.model,
            model_args=opts.model_args,
            shards=shards,
            max_restarts=opts.max_restarts,
            max_seconds=opts.max_seconds,
            round_timeout=opts.round_timeout,
            num_cpus=opts.num_cpus,
            placement_strategy=opts.placement_strategy,
        )

    async def aclose(self) -> None:
        """Stop the workers and remove the temporary shard directory."""
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    async def __aenter__(self) -> Trainer:
        try:
            await self.start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def pool(self) -> PortWorkers | RayWorkers:
        """The running workers: ``PortWorkers``, or ``RayWorkers`` with ``backend="ray"``
        (``RuntimeError`` before ``start``)."""
        return self._started()

    async def worker_os_pids(self) -> list[int]:
        """Each worker's OS pid; waits behind a round the worker is running."""
        return await self._started().os_pids()

    async def wait_spares(self, timeout: float = 60.0) -> list[list[int]]:
        """Block until every worker has a warm spare ready (``port_options`` with
        ``spares`` >= 1), so a worker killed from now on is replaced by adopting its spare
        instead of starting an interpreter; each worker's spare OS pids (``[]`` each when
        spares are off). Benchmarks call it before timing, since spares starting compete
        with training for the CPUs. ``CallTimeout`` after ``timeout`` seconds. With
        ``backend="ray"`` there are no spares: ``[]`` each."""
        pool = self._started()
        if not isinstance(pool, PortWorkers):
            return [[] for _ in range(self.options.workers)]
        return await pool.wait_spares(timeout)

    # -- training --------------------------------------------------------------------------

    async def fit(self, rounds: int) -> TrainResult:
        """Run rounds until ``rounds`` are complete (resuming from the checkpoint if there is
        one); blocks for the whole run. Raises ``TrainingFailed`` when a worker keeps dying
        (the supervisor's restart intensity is exceeded), its model raises, or a round
        exceeds ``round_timeout``; the workers are then stopped."""
        if type(rounds) is not int or rounds < 0:
            raise ValueError(
                f"trainer '{self.name}'.fit: rounds must be an int >= 0; got {rounds!r}"
            )
        pool, opts = self._started(), self.options
        params, state, first = self._initial()
        history: list[RoundStats] = []
        clock = pool.node.clock
        try:
            for r in range(first, rounds):
                began, restarts = clock.now(), pool.restarts
                if opts.sync == "gradients":
                    params, loss, processed = await self._sync_round(r, params)
                else:
                    replies = await self._round(r, params, state)
                    params, state = self._average(replies, state is not None)
                    total = sum(x.samples for x in replies)
                    loss = sum(x.loss * x.samples for x in replies) / total
                    processed = sum(x.processed for x in replies)
                if opts.checkpoint is not None:
                    checkpoint.save(opts.checkpoint, r, params, state)
                stats = RoundStats(
                    r,
                    loss,
                    self.evaluate(params),
                    processed,
                    pool.restarts - restarts,
                    clock.now() - began,
                )
                history.append(stats)
                self._emit(stats)
        except TrainingFailed:
            await self.aclose()
            raise
        return TrainResult(params, max(first, rounds), history)

    def _average(
        self, replies: list[Reply], with_state: bool
    ) -> tuple[Parameters, Parameters | None]:
        """The replies' parameters (and optimizer state) averaged by shard rows, and per
        row for the model's embedding tables (``row_counts``)."""
        counts = self._row_counts
        params = weighted_average([(x.params, x.samples) for x in replies], row_counts=counts)
        if not with_state:
            return params, None
        states = [(x.state or {}, x.samples) for x in replies]
        names = set(states[0][0])
        state_counts = (
            None if counts is None else [{k: v for k, v in c.items() if k in names} for c in counts]
        )
        return params, weighted_average(states, row_counts=state_counts)

    def evaluate(
        self, params: Mapping[str, np.ndarray], data: Data | None = None
    ) -> dict[str, float]:
        """The model's metrics for ``params`` on ``data`` (default ``eval_data``; ``{}``
        when neither is given); runs here and blocks."""
        data = self._eval if data is None else data
        if data is None:
            return {}
        self._model.set_parameters(params)
        return self._model.evaluate(data)

    async def _round(self, r: int, params: Parameters, state: Parameters | None) -> list[Reply]:
        pool, opts = self._started(), self.options

        async def one(k: int) -> Reply:
            request = {
                "params": params,
                "state": state,
                "epochs": opts.local_epochs,
                "seed": round_seed(opts.seed, r, k),
            }
            reply = await pool.run(k, r, request)
            try:
                return parse_reply(reply)
            except TypeError as exc:
                raise TrainingFailed(repr(self.name), r, k, exc) from exc

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(k)) for k in range(opts.workers)]
        except* TrainingFailed as failures:
            raise failures.exceptions[0] from None
        return [task.result() for task in tasks]

    async def _sync_round(self, r: int, params: Parameters) -> tuple[Parameters, float, int]:
        """One round of ``sync="gradients"``: ``local_epochs`` epochs of steps, each averaging
        every worker's batch gradients and applying them here (``corral.train.sync``)."""
        opts, model = self.options, self._model
        if not isinstance(model, GradientModel):  # checked in __init__; narrows the type
            raise TypeError(f"trainer '{self.name}': not a GradientModel")
        sizes = self._sizes
        seeds = [round_seed(opts.seed, r, k) for k in range(opts.workers)]
        model.set_parameters(params)
        loss, processed = 0.0, 0
        for epoch in range(opts.local_epochs):
            total = 0.0
            for step in range(steps_per_epoch(sizes, model.batch_size)):
                base: dict[str, object] = {"sync": "gradients", "epoch": epoch, "step": step}
                base["params"] = model.get_parameters()
                replies = await self._gather(r, [{**base, "seed": seed} for seed in seeds])
                parts = [_gradient_reply(self.name, r, k, x) for k, x in enumerate(replies)]
                parts = [p for p in parts if p[1] > 0]
                model.apply_gradients(combine_gradients([(g, n) for g, n, _ in parts]))
                total += sum(batch_loss * n for _, n, batch_loss in parts)
                processed += sum(n for _, n, _ in parts)
            loss = total / sum(sizes)
        return model.get_parameters(), loss, processed

    async def _gather(self, r: int, requests: list[dict[str, object]]) -> list[object]:
        """Run ``requests[k]`` on worker ``k``, all at once; the first failure cancels the
        rest and is raised."""
        pool = self._started()
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(pool.run(k, r, x)) for k, x in enumerate(requests)]
        except* TrainingFailed as failures:
            raise failures.exceptions[0] from None
        return [task.result() for task in tasks]

    def _initial(self) -> tuple[Parameters, Parameters | None, int]:
        opts = self.options
        saved = checkpoint.load(opts.checkpoint) if opts.checkpoint is not None else None
        wants_state = opts.average_optimizer_state and isinstance(self._model, StatefulModel)
        if saved is not None:
            telemetry.emit(RESUMED_EVENT, {"round": saved.round}, {"trainer": self.name})
            state = saved.optimizer_state if wants_state else None
            return saved.parameters, state, saved.round + 1
        state = self._model.get_optimizer_state() if wants_state else None  # type: ignore[attr-defined]
        return self._model.get_parameters(), state, 0

    def _emit(self, stats: RoundStats) -> None:
        measurements: dict[str, float] = {
            "round": stats.round,
            "loss": stats.loss,
            "samples": stats.samples,
            "restarts": stats.restarts,
            "duration": stats.duration,
        }
        measurements.update({f"eval_{k}": v for k, v in stats.metrics.items()})
        telemetry.emit(ROUND_EVENT, measurements, {"trainer": self.name})

    def _started(self) -> PortWorkers | RayWorkers:
        if self._pool is None:
            raise RuntimeError(f"trainer '{self.name}': not started; use `async with trainer`")
        return self._pool


def _gradient_reply(name: str, r: int, k: int, reply: object) -> tuple[Gradients, int, float]:
    error = TypeError("gradient reply: must have grads, samples (int) and loss")
    if isinstance(reply, Mapping):
        grads, samples, loss = reply.get("grads"), reply.get("samples"), reply.get("loss")
        if isinstance(grads, Mapping) and type(samples) is int and isinstance(loss, float | int):
            try:
                return decode_gradients(grads), samples, float(loss)
            except TypeError as exc:
                error = exc
    raise TrainingFailed(repr(name), r, k, error)
