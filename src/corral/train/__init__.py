"""Data-parallel training that averages what supervised workers learn (see
``docs/training.md``). This module only re-exports; the torch wrapper lives in
``corral.train.torch`` and is imported only when used."""

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
