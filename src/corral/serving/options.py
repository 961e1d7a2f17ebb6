"""``ServingOptions``: every option of a ``Serving``, with its doc, default, unit and rule."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast

from corral._options import Options, is_int, is_number, one_of, option
from corral.serving.contract import InputSpec, Spec, parse_input_spec

if TYPE_CHECKING:
    from corral.serving.policy import BatchPolicy

__all__ = ["RAY_OPTION_KEYS", "ServingOptions"]

PartitionKind = Literal["thread", "loop", "port", "ray"]


RAY_OPTION_KEYS: tuple[str, ...] = (
    "resources",
    "scheduling_strategy",
    "runtime_env",
    "memory",
    "accelerator_type",
    "label_selector",
)
"""The Ray actor options ``ray_options`` may set (num_cpus and num_gpus are options of their
own; max_restarts, name and namespace are corral's)."""
SwapStrategy = Literal["auto", "rolling", "all_at_once"]


def _valid_pad_to(value: object) -> bool:
    return type(value) is tuple and all(type(v) is int and v >= 1 for v in value)


def _is_pad_value(value: object) -> bool:
    return type(value) in (int, float, bool)


def _valid_sequence_pad(value: object) -> bool:
    if isinstance(value, Mapping):
        return bool(value) and all(
            type(k) in (str, int) and _is_pad_value(v) for k, v in value.items()
        )
    return _is_pad_value(value)


def _valid_input_spec(value: object) -> bool:
    if value is None or isinstance(value, InputSpec):
        return True
    if isinstance(value, dict):
        return all(isinstance(v, InputSpec) for v in value.values())
    return isinstance(value, tuple) and all(isinstance(v, InputSpec) for v in value)


@dataclass(frozen=True, kw_only=True)
class ServingOptions(Options):
    """How a serving batches, where it runs batches, and how it fails."""

    _what = "serving"

    batch_size: int = option(
        64,
        doc="Most samples in one batch; a full key is cut at once.",
        rule="an int >= 1",
        check=is_int(1),
    )
    batch_timeout: float = option(
        0.005,
        doc="Seconds the oldest queued request waits for its batch to fill before the batch "
        "is cut anyway.",
        rule="a number >= 0",
        check=is_number(0),
    )
    max_queue: int = option(
        4096,
        doc="Most requests queued (all keys); beyond it run() fails at once with "
        "ServingOverloaded.",
        rule="an int >= 1",
        check=is_int(1),
    )
    partitions: int = option(
        1,
        doc="How many partitions (model instances) run batches concurrently.",
        rule="an int >= 1",
        check=is_int(1),
    )
    kind: PartitionKind = option(
        "thread",
        doc="'thread': each partition runs the model on a dedicated thread of this process "
        "(for numpy/torch/onnxruntime, which release the GIL); 'loop': each batch runs inline "
        "on the event loop, with no thread hand-off (for models whose batch takes well under "
        "a millisecond: the loop is blocked meanwhile); 'port': each partition runs it in a "
        "corral Port worker OS process (the model factory must be an importable 'module:attr' "
        "path); 'ray': each partition is a Ray actor placed on the cluster this process is "
        "connected to (corral.cluster.connect), one Ray call per batch (an importable factory, "
        "as for 'port').",
        rule="'thread', 'loop', 'port' or 'ray'",
        check=one_of("thread", "loop", "port", "ray"),
    )
    batch_keys: Callable[[object], Hashable] | None = option(
        None,
        doc="Called on each request's input; requests with equal keys batch together (one "
        "queue per key, e.g. a shape bucket). None: one queue.",
        rule="a callable or None",
        check=lambda v: v is None or callable(v),
    )
    pad_to: tuple[int, ...] = option(
        (),
        doc="Batch sizes to pad to (with zeros) for models that need static shapes; the "
        "largest must be >= batch_size. Empty: no padding.",
        rule="a tuple of ints >= 1",
        check=_valid_pad_to,
    )
    retry_on_crash: int = option(
        1,
        doc="Partition crashes a request may go through and still be run again (inference "
        "is idempotent); one more fails it with PartitionCrashed. A crashed batch's requests "
        "are retried one per batch, so a request that kills its worker costs at most "
        "retry_on_crash + 1 restarts.",
        rule="an int >= 0",
        check=is_int(0),
    )
    isolate_errors: bool = option(
        True,
        doc="When the model raises on a batch of several requests, split the batch in halves "
        "and run them again until the offending requests are alone: only they fail, with the "
        "model's error. False: the whole batch fails with the error.",
        rule="a bool",
        check=lambda v: type(v) is bool,
    )
    input_spec: Spec | None = option(
        None,
        doc="The input contract of one sample: an InputSpec(shape, dtype) or a (shape, dtype) "
        "pair, shape without the batch axis (None in it: any size); for dict or tuple "
        "requests a dict of field names to those, or a tuple of InputSpec. A request that "
        "does not conform fails at once, alone, with InvalidInput. None: any numeric array "
        "(or dict or tuple of them), with requests of different shapes or dtypes batched "
        "apart.",
        rule="an InputSpec, a (shape, dtype) pair, a dict or tuple of them, or None",
        check=_valid_input_spec,
    )
    sequence_buckets: tuple[int, ...] = option(
        (),
        doc="Sequence lengths to bucket requests by: a request whose sequence axis (a "
        "sample's first axis) has length n is queued with the smallest bucket >= n, and its "
        "batch is padded on that axis to the bucket's length with sequence_pad (longer than "
        "the largest: InvalidInput). Output fields that keep the axis are cut back to each "
        "request's length (sequence_unpad). Empty: no sequence buckets.",
        rule="a tuple of ints >= 1",
        check=_valid_pad_to,
    )
    sequence_pad: int | float | Mapping[str | int, int | float] = option(
        0,
        doc="With sequence_buckets: the pad value of the sequence axis. A number: every "
        "field (or the one array) has the axis and is padded with it; a mapping of dict "
        "field names (or tuple positions) to pad values: only those fields have the axis, "
        "e.g. {'input_ids': 0, 'attention_mask': 0}.",
        rule="a number, or a non-empty mapping of field names (or positions) to numbers",
        check=_valid_sequence_pad,
    )
    sequence_unpad: bool | str | tuple[str | int | None, ...] = option(
        "auto",
        doc="With sequence_buckets: which output fields keep the sequence axis and are cut "
        "back to each request's own length on it. 'auto': fields of 3 axes or more whose "
        "second axis is the bucket length (per-token vectors, (batch, length, hidden)); True: "
        "every field whose second axis is the bucket length; a tuple of output field names "
        "(positions for tuple outputs, None for a plain array): those; False: none.",
        rule="'auto', a bool, or a tuple of output field names, positions or None",
        check=lambda v: (
            v == "auto"
            or type(v) is bool
            or (type(v) is tuple and all(x is None or type(x) in (str, int) for x in v))
        ),
    )
    promote_buckets: int = option(
        0,
        doc="With sequence_buckets: how many buckets up a request of a ready yet under-full "
        "bucket may be promoted to fill a batch being cut with room left (PromotingPolicy): "
        "it runs padded to the larger length instead of in a small batch of its own. 0: "
        "never.",
        rule="an int >= 0",
        check=is_int(0),
    )
    batch_policy: Callable[..., BatchPolicy] | None = option(
        None,
        doc="The batching policy: a BatchPolicy subclass (or a callable taking its keyword "
        "arguments batch_size, batch_timeout, max_queue, pad_to) returning one. None: "
        "BatchPolicy, or PromotingPolicy when promote_buckets > 0.",
        rule="a callable or None",
        check=lambda v: v is None or callable(v),
    )
    preprocess: Callable[[object], object] | None = option(
        None,
        doc="Called in the caller's task with what run() (or run_batch()) was given, before "
        "the input contract: its result is the request (e.g. a tokenizer: text in, a dict of "
        "token arrays out). An exception raises in the caller; the request is not counted. "
        "None: the input is the request.",
        rule="a callable or None",
        check=lambda v: v is None or callable(v),
    )
    preprocess_in: Literal["caller", "partition"] = option(
        "caller",
        doc="Where preprocess runs: 'caller', in the caller's task before the request is "
        "queued (the serving can then bucket by what it returns, e.g. token length); "
        "'partition', on the partition's thread for the whole batch (thread and loop kinds): "
        "the caller's event loop is spared the work, requests are queued as sent (one "
        "queue), and the input contract is checked there, a refused request failing alone "
        "as a model error would.",
        rule="'caller' or 'partition'",
        check=one_of("caller", "partition"),
    )
    postprocess: Callable[[object], object] | None = option(
        None,
        doc="Called in the caller's task with a request's output; its result is the "
        "Result's output. An exception raises in the caller. None: the output as is.",
        rule="a callable or None",
        check=lambda v: v is None or callable(v),
    )
    threads: int | None = option(
        None,
        doc="Native threads per partition: torch's intra-op threads, set on each thread "
        "partition's own thread (the model's set_threads), and "
        "OMP_NUM_THREADS, MKL_NUM_THREADS and OPENBLAS_NUM_THREADS in port workers' "
        "environment (unless port_options' env sets them). None: max(1, cores // "
        "partitions), so partitions x threads fit the cores this process may use; 0: leave "
        "every library's own default.",
        rule="an int >= 0 or None",
        check=lambda v: v is None or is_int(0)(v),
    )
    drop_late: bool = option(
        True,
        doc="At a batch's cut, drop the requests whose deadline falls before the batch could "
        "end (now plus the average compute time of recent batches): they fail at once with "
        "DeadlineExceeded, unrun, instead of taking a place in a batch whose answer would "
        "come too late. False: they run, and fail at their deadline if the batch is slower.",
        rule="a bool",
        check=lambda v: type(v) is bool,
    )
    restart_wait: float = option(
        5.0,
        doc="Seconds a request made while the serving restarts after a crash waits for it to "
        "come back (at most its deadline) before failing with ServingRestarting.",
        rule="a number >= 0",
        check=is_number(0),
    )
    partition_max_restarts: int | None = option(
        None,
        doc="Restart intensity of the partitions' supervisor: most partition restarts in "
        "partition_max_seconds before it gives up and the serving restarts whole. None: "
        "max(3, 2 * partitions).",
        rule="an int >= 0 or None",
        check=lambda v: v is None or is_int(0)(v),
    )
    partition_max_seconds: float = option(
        5.0,
        doc="The window of partition_max_restarts, in seconds.",
        rule="a number > 0",
        check=is_number(0, strict=True),
    )
    version: str = option(
        "1",
        doc="The first model version's label; results and statistics carry it.",
        rule="a non-empty str",
        check=lambda v: type(v) is str and v != "",
    )
    device: str | None = option(
        None,
        doc="Device for adapters that have one (torch: 'cpu', 'cuda:0'); None: the default.",
        rule="a str or None",
        check=lambda v: v is None or type(v) is str,
    )
    port_options: Mapping[str, object] | tuple[tuple[str, object], ...] = option(
        (),
        doc="Extra PortOptions for 'port' partitions (env, spares, spin, ...): a mapping "
        "({'spares': 1, 'env': {...}}) or (name, value) pairs; kept as pairs. Checked here "
        "against PortOptions' fields and rules (handler and args are the serving's own).",
        rule="a mapping of str to value, or a tuple of (str, value) pairs",
        check=lambda v: (
            type(v) is tuple
            and all(type(p) is tuple and len(p) == 2 and type(p[0]) is str for p in v)
        ),
    )
    num_cpus: float = option(
        1.0,
        doc="'ray' partitions: CPUs Ray reserves for each partition actor (placement; the "
        "model may use more or fewer).",
        rule="a number >= 0",
        check=is_number(0),
    )
    num_gpus: float = option(
        0.0,
        doc="'ray' partitions: GPUs Ray reserves for each partition actor (fractions share "
        "one GPU); set device too (e.g. 'cuda:0') for adapters that take one.",
        rule="a number >= 0",
        check=is_number(0),
    )
    ray_options: Mapping[str, object] | tuple[tuple[str, object], ...] = option(
        (),
        doc="'ray' partitions: more of Ray's actor options, as a mapping or (name, value) "
        "pairs; kept as pairs. Keys: " + ", ".join(RAY_OPTION_KEYS) + " (runtime_env ships "
        "model code: py_modules, working_dir, pip, env_vars).",
        rule="a mapping of str to value, or a tuple of (str, value) pairs, with the keys listed",
        check=lambda v: (
            type(v) is tuple
            and all(type(p) is tuple and len(p) == 2 and p[0] in RAY_OPTION_KEYS for p in v)
            and len({p[0] for p in v}) == len(v)
        ),
    )
    call_timeout: float | None = option(
        None,
        doc="Seconds one batch may run on a partition before the partition is killed and "
        "the batch treated as crashed. None: no limit.",
        rule="a number > 0 or None",
        check=lambda v: v is None or is_number(0, strict=True)(v),
    )
    swap: SwapStrategy = option(
        "auto",
        doc="How swap() replaces the partitions. 'rolling': one partition at a time (start "
        "the new version's partition k, warm it, put it in service, drain and stop the old "
        "partition k, then k+1), so at most one model loads at a time, the partitions in "
        "service never drop below 'partitions', and at most partitions + 1 models are held; "
        "results carry the version that ran them, both for a while. 'all_at_once': start "
        "and warm every new partition at once, then flip every new batch to the new version "
        "in one step: the quickest swap when cores and memory are free, but 2x the models "
        "in memory and every load competing with serving at once. 'auto': rolling for "
        "'port' and 'ray' partitions (each a process that loads its own model), "
        "all_at_once otherwise.",
        rule="'auto', 'rolling' or 'all_at_once'",
        check=one_of("auto", "rolling", "all_at_once"),
    )
    inherit_sys_path: bool = option(
        True,
        doc="'port' and 'ray' partitions: put this process's sys.path entries that lie "
        "outside the "
        "Python installation (the current directory, a script's folder, paths added at run "
        "time) on the worker's PYTHONPATH, so a factory that imports here imports there.",
        rule="a bool",
        check=lambda v: type(v) is bool,
    )

    def __post_init__(self) -> None:
        spec: object = self.input_spec
        if spec is not None and not isinstance(spec, InputSpec):
            try:
                object.__setattr__(self, "input_spec", parse_input_spec(spec))
            except ValueError as exc:
                raise ValueError(f"invalid options for {self._what}: input_spec: {exc}") from None
        for name in ("port_options", "ray_options"):
            pairs = getattr(self, name)
            if isinstance(pairs, Mapping) and all(type(k) is str for k in pairs):
                # Frozen: normalise before the checks run, so every later reader sees pairs.
                # (A mapping with other keys stays as given, for the check to quote.)
                object.__setattr__(self, name, tuple(pairs.items()))
        super().__post_init__()
        if self.port_options:
            _check_port_options(self._what, cast(tuple[tuple[str, object], ...], self.port_options))
        if self.pad_to and max(self.pad_to) < self.batch_size:
            raise ValueError(
                f"invalid options for {self._what}: pad_to must hold a size >= batch_size="
                f"{self.batch_size}; got {self.pad_to!r}"
            )
        if self.preprocess_in == "partition" and (
            self.preprocess is None or self.kind not in ("thread", "loop")
        ):
            raise ValueError(
                f"invalid options for {self._what}: preprocess_in='partition' needs a "
                f"preprocess hook and kind 'thread' or 'loop'; got preprocess="
                f"{self.preprocess!r} and kind={self.kind!r}"
            )
        if self.promote_buckets and not self.sequence_buckets:
            raise ValueError(
                f"invalid options for {self._what}: promote_buckets needs sequence_buckets; "
                f"got promote_buckets={self.promote_buckets} and no sequence_buckets"
            )


_SERVING_SETS = ("handler", "args")
"""PortOptions a serving sets itself for its port partitions."""


def _check_port_options(what: str, pairs: tuple[tuple[str, object], ...]) -> None:
    """Refuse unknown, reserved or repeated ``port_options`` keys and values PortOptions
    would refuse, naming ``port_options`` and the key."""
    from corral.port.port import PortOptions

    valid = [f.name for f in dataclasses.fields(PortOptions) if f.name not in _SERVING_SETS]
    seen: set[str] = set()
    for key, _ in pairs:
        if key in _SERVING_SETS:
            problem = f"port_options cannot set {key!r}: the serving sets it for its partitions"
        elif key not in valid:
            problem = f"port_options has an unknown key {key!r}"
        elif key in seen:
            problem = f"port_options names {key!r} twice"
        else:
            seen.add(key)
            continue
        raise ValueError(f"invalid options for {what}: {problem}; valid keys: {', '.join(valid)}")
    try:
        PortOptions(handler="corral.serving.port_handler:ServingHandler", **dict(pairs))  # type: ignore[arg-type]
    except ValueError as exc:
        detail = str(exc).removeprefix(f"invalid options for {PortOptions._what}: ")
        raise ValueError(f"invalid options for {what}: port_options: {detail}") from None


def swap_strategy(options: ServingOptions) -> Literal["rolling", "all_at_once"]:
    """The swap strategy ``options`` ask for, with ``"auto"`` resolved by kind."""
    if options.swap == "auto":
        return "rolling" if options.kind in ("port", "ray") else "all_at_once"
    return options.swap


def thread_budget(options: ServingOptions) -> int:
    """Native threads per partition under ``options`` (0: leave the libraries' defaults)."""
    if options.threads is not None:
        return options.threads
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // options.partitions)


def partition_restarts(options: ServingOptions) -> int:
    """The partitions supervisor's ``max_restarts`` under ``options``."""
    if options.partition_max_restarts is not None:
        return options.partition_max_restarts
    return max(3, 2 * options.partitions)
