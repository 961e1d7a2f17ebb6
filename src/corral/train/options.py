"""``TrainerOptions``: every option of ``Trainer``, with its doc, default and rule."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from corral._options import Options, is_int, is_number, one_of, option

__all__ = ["TrainerOptions"]


def _is_spec(value: object) -> bool:
    if type(value) is not str:
        return False
    module, sep, attr = value.partition(":")
    return bool(sep and module and attr)


def _str_mapping(value: object) -> bool:
    return value is None or (isinstance(value, Mapping) and all(type(k) is str for k in value))


@dataclass(frozen=True, kw_only=True)
class TrainerOptions(Options):
    """How a ``Trainer`` shards, trains, averages, restarts and checkpoints."""

    _what = "trainer"

    model: str = option(
        "",
        doc="The model factory, 'module:Class', importable in the workers and here.",
        rule="a str like 'module:Class'",
        check=_is_spec,
    )
    model_args: Mapping[str, object] | None = option(
        None,
        doc="Keyword arguments for the model factory (msgpack-encodable).",
        rule="a mapping with str keys or None",
        check=_str_mapping,
    )
    workers: int = option(
        2, doc="Worker processes, one shard each.", rule="an int >= 1", check=is_int(1)
    )
    local_epochs: int = option(
        1, doc="Epochs each worker trains its shard per round.", rule="an int >= 1", check=is_int(1)
    )
    seed: int = option(
        0,
        doc="Seed of every worker's shuffling (per round and worker).",
        rule="an int >= 0",
        check=is_int(0),
    )
    shard_by: str | None = option(
        None,
        doc="A data column whose equal values stay in one shard, shards balanced by rows "
        "(e.g. 'item' for matrix factorization: each item's rows are trained by one worker, "
        "whose rows of it the per-row average then keeps; see corral.train.sharding); "
        "None: contiguous shards.",
        rule="a non-empty str or None",
        check=lambda v: v is None or (type(v) is str and v != ""),
    )
    sync: str = option(
        "parameters",
        doc="'parameters': each worker trains local_epochs, then parameters are averaged "
        "(local SGD); 'gradients': gradients are averaged every step, one call per worker "
        "per step (see corral.train.sync; numpy SGD models).",
        rule="'parameters' or 'gradients'",
        check=lambda v: v in ("parameters", "gradients"),
    )
    average_optimizer_state: bool = option(
        False,
        doc="Also average the models' optimizer state (models with get_optimizer_state).",
        rule="a bool",
        check=lambda v: type(v) is bool,
    )
    checkpoint: str | None = option(
        None,
        doc="Path of the .npz checkpoint written after every round and resumed from at "
        "fit(); None: no checkpoints.",
        rule="a non-empty str or None",
        check=lambda v: v is None or (type(v) is str and v != ""),
    )
    max_restarts: int = option(
        3,
        doc="Worker restarts allowed within max_seconds before the run fails.",
        rule="an int >= 0",
        check=is_int(0),
    )
    max_seconds: float = option(
        5.0,
        doc="Restart-intensity window, in seconds.",
        rule="a number > 0",
        check=is_number(0, strict=True),
    )
    round_timeout: float | None = option(
        3600.0,
        doc="Seconds one worker's round may take before the run fails; None: no limit.",
        rule="a number > 0 or None",
        check=lambda v: v is None or is_number(0, strict=True)(v),
    )
    data_dir: str | None = option(
        None,
        doc="Directory for the shard files the workers map; None: a temporary directory "
        "removed at close.",
        rule="a non-empty str or None",
        check=lambda v: v is None or (type(v) is str and v != ""),
    )
    port_options: Mapping[str, object] | None = option(
        None,
        doc="Extra options for every worker Port (env, spares, start_timeout, ...); "
        "backend='ports' only.",
        rule="a mapping with str keys or None",
        check=_str_mapping,
    )
    backend: str = option(
        "ports",
        doc="Where the workers run: 'ports' (worker OS processes on this machine) or 'ray' "
        "(Ray actors on a cluster, in one placement group; see corral.cluster.training).",
        rule="'ports' or 'ray'",
        check=one_of("ports", "ray"),
    )
    ray_address: str | None = option(
        None,
        doc="backend='ray': the cluster to connect to when this process is not connected "
        "yet ('auto', 'HOST:PORT', 'ray://...'); None: the connected one, else Ray's own "
        "rule (RAY_ADDRESS or a new local cluster).",
        rule="a non-empty str or None",
        check=lambda v: v is None or (type(v) is str and v != ""),
    )
    num_cpus: float = option(
        1.0,
        doc="backend='ray': CPUs Ray reserves for each worker (its placement-group bundle).",
        rule="a number > 0",
        check=is_number(0, strict=True),
    )
    placement_strategy: str = option(
        "SPREAD",
        doc="backend='ray': the placement group's strategy: 'SPREAD' (over the nodes when "
        "there is room), 'PACK', 'STRICT_SPREAD' or 'STRICT_PACK'.",
        rule="one of 'PACK', 'SPREAD', 'STRICT_PACK', 'STRICT_SPREAD'",
        check=one_of("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.backend == "ray" and self.port_options:
            raise ValueError(
                f"invalid options for {self._what}: port_options is only used with "
                "backend='ports'; backend is 'ray'"
            )
