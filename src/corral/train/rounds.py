"""One worker's part of a round, and plain single-process training: the same code path.

``train_round`` is what a worker runs for each round (and what ``train_locally`` runs in
this process), so one worker over the whole data set equals ``train_locally`` bit for bit.
``round_seed`` derives the shuffling seed of worker ``k`` in round ``r`` from the run's seed
alone, so a re-run shard (after a crash, or after resuming) shuffles exactly as the first run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from corral.train.averaging import weighted_average
from corral.train.model import Data, Model, Parameters, StatefulModel, rows

__all__ = ["Reply", "parse_reply", "round_seed", "train_locally", "train_round"]


def round_seed(seed: int, round: int, worker: int) -> int:
    """The shuffling seed of ``worker`` in ``round`` for a run seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, round, worker]).generate_state(1)[0])


def train_round(model: Model, data: Data, request: Mapping[str, object]) -> dict[str, object]:
    """Set the request's parameters (and optimizer state), train, and return the reply.

    ``request``: ``params``, ``state`` (a dict or None), ``epochs``, ``seed``. The reply:
    ``params``, ``state`` (None unless the model is stateful and a state was sent),
    ``samples`` (rows of ``data``: the averaging weight), ``processed`` and ``loss``.
    Blocks for the whole local training; exceptions from the model propagate.
    """
    params = request["params"]
    state = request.get("state")
    epochs, seed = request["epochs"], request["seed"]
    if not isinstance(params, Mapping) or type(epochs) is not int or type(seed) is not int:
        raise TypeError(f"train_round: malformed request {sorted(request)}")
    model.set_parameters(params)
    stateful = isinstance(state, Mapping) and isinstance(model, StatefulModel)
    if isinstance(state, Mapping) and isinstance(model, StatefulModel):
        model.set_optimizer_state(state)
    stats = model.train(data, epochs=epochs, seed=seed)
    return {
        "params": model.get_parameters(),
        "state": model.get_optimizer_state()
        if isinstance(model, StatefulModel) and stateful
        else None,
        "samples": rows(data),
        "processed": stats.samples,
        "loss": stats.loss,
    }


@dataclass(frozen=True)
class Reply:
    """A worker's reply to a round, checked (see ``train_round``)."""

    params: Parameters
    state: Parameters | None
    samples: int
    processed: int
    loss: float


def parse_reply(reply: object) -> Reply:
    """Check a round reply's shape; ``TypeError`` naming what is wrong."""
    if not isinstance(reply, Mapping):
        raise TypeError(f"round reply: must be a mapping; got {type(reply).__name__}")
    params, state = reply.get("params"), reply.get("state")
    samples, processed, loss = reply.get("samples"), reply.get("processed"), reply.get("loss")
    if not isinstance(params, Mapping) or not (state is None or isinstance(state, Mapping)):
        raise TypeError("round reply: params must be a mapping and state a mapping or None")
    if type(samples) is not int or type(processed) is not int or not isinstance(loss, float | int):
        raise TypeError(
            f"round reply: samples and processed must be ints, loss a number; got "
            f"{samples!r}, {processed!r}, {loss!r}"
        )
    return Reply(
        dict(params), None if state is None else dict(state), samples, processed, float(loss)
    )


def train_locally(
    model: Model,
    data: Data,
    *,
    rounds: int,
    local_epochs: int = 1,
    seed: int = 0,
    average_optimizer_state: bool = False,
) -> Parameters:
    """Plain single-process training with exactly the trainer's schedule and seeds (one
    worker); returns the final parameters. Blocks."""
    params: Mapping[str, npt.NDArray[np.generic]] = model.get_parameters()
    state = _initial_state(model, average_optimizer_state)
    for r in range(rounds):
        request = {
            "params": params,
            "state": state,
            "epochs": local_epochs,
            "seed": round_seed(seed, r, 0),
        }
        reply = parse_reply(train_round(model, data, request))
        params = weighted_average([(reply.params, reply.samples)])
        if state is not None and reply.state is not None:
            state = weighted_average([(reply.state, reply.samples)])
    return dict(params)


def _initial_state(model: Model, wanted: bool) -> Parameters | None:
    if wanted and isinstance(model, StatefulModel):
        return model.get_optimizer_state()
    return None
