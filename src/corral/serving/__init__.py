"""Batched inference: many concurrent callers, one model, cut into batches.

``Serving(factory, name=..., batch_size=..., batch_timeout=..., partitions=..., kind=...)``
is an inert value; run it inline (``run_inline``) or as a supervised process
(``child_spec()``), then ``await serving.run(x)`` or ``serving.run_sync(x)``. See
``docs/serving.md``.
"""

from corral.serving.adapters import AsyncFunctionModel, FunctionModel, Model, adapt
from corral.serving.contract import InputSpec
from corral.serving.factory import ModelFactory
from corral.serving.options import ServingOptions
from corral.serving.policy import Batch, BatchPolicy, Request
from corral.serving.records import PartitionStatistics, Result, ServingStatistics
from corral.serving.serving import Serving

__all__ = [
    "AsyncFunctionModel",
    "Batch",
    "BatchPolicy",
    "FunctionModel",
    "InputSpec",
    "Model",
    "ModelFactory",
    "PartitionStatistics",
    "Request",
    "Result",
    "Serving",
    "ServingOptions",
    "ServingStatistics",
    "adapt",
]
