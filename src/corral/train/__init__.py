"""Data-parallel training that averages what supervised workers learn (see
``docs/training.md``). This module only re-exports, lazily (``corral._lazy``): ``corral
--help`` and a port worker's start-up import only what they use, and the torch wrapper
(``corral.train.torch_model``) is imported only when used."""

from typing import TYPE_CHECKING

from corral._lazy import lazy_exports

if TYPE_CHECKING:
    from corral.errors import TrainingFailed
    from corral.train.averaging import weighted_average
    from corral.train.checkpoint import Checkpoint
    from corral.train.factorization import MatrixFactorization
    from corral.train.linear import LinearRegression, LogisticRegression
    from corral.train.model import (
        Data,
        Model,
        Parameters,
        SparseModel,
        StatefulModel,
        TrainStats,
        load_model,
    )
    from corral.train.options import TrainerOptions
    from corral.train.rounds import round_seed, train_locally, train_round
    from corral.train.sharding import key_shards, shard_bounds, split
    from corral.train.sync import GradientModel
    from corral.train.trainer import RESUMED_EVENT, ROUND_EVENT, RoundStats, Trainer, TrainResult
    from corral.train.workers import PortWorkers, WorkerPool

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "TrainingFailed": "corral.errors",
        "weighted_average": "corral.train.averaging",
        "Checkpoint": "corral.train.checkpoint",
        "MatrixFactorization": "corral.train.factorization",
        "LinearRegression": "corral.train.linear",
        "LogisticRegression": "corral.train.linear",
        "Data": "corral.train.model",
        "Model": "corral.train.model",
        "Parameters": "corral.train.model",
        "SparseModel": "corral.train.model",
        "StatefulModel": "corral.train.model",
        "TrainStats": "corral.train.model",
        "load_model": "corral.train.model",
        "TrainerOptions": "corral.train.options",
        "round_seed": "corral.train.rounds",
        "train_locally": "corral.train.rounds",
        "train_round": "corral.train.rounds",
        "key_shards": "corral.train.sharding",
        "shard_bounds": "corral.train.sharding",
        "split": "corral.train.sharding",
        "GradientModel": "corral.train.sync",
        "RESUMED_EVENT": "corral.train.trainer",
        "ROUND_EVENT": "corral.train.trainer",
        "RoundStats": "corral.train.trainer",
        "TrainResult": "corral.train.trainer",
        "Trainer": "corral.train.trainer",
        "PortWorkers": "corral.train.workers",
        "WorkerPool": "corral.train.workers",
    },
)

__all__ = [
    "RESUMED_EVENT",
    "ROUND_EVENT",
    "Checkpoint",
    "Data",
    "GradientModel",
    "LinearRegression",
    "LogisticRegression",
    "MatrixFactorization",
    "Model",
    "Parameters",
    "PortWorkers",
    "RoundStats",
    "SparseModel",
    "StatefulModel",
    "TrainResult",
    "TrainStats",
    "Trainer",
    "TrainerOptions",
    "TrainingFailed",
    "WorkerPool",
    "key_shards",
    "load_model",
    "round_seed",
    "shard_bounds",
    "split",
    "train_locally",
    "train_round",
    "weighted_average",
]
