"""Reading a pipeline's options from the nested mapping a user writes into the records of
``corral.pipeline.options``, with errors that name the dotted path of the option and, for
an unknown key, the valid ones."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, TypeVar

from corral._options import Options
from corral.pipeline.options import (
    PRODUCER_MODULES,
    BackoffOptions,
    BatcherOptions,
    PipelineOptions,
    ProcessorOptions,
    ProducerOptions,
    RateLimitingOptions,
    RetryOptions,
    is_producer_class,
)

if TYPE_CHECKING:
    from corral.pipeline.producer import Producer

__all__ = ["parse_pipeline_options", "parse_record", "resolve_producer"]

_R = TypeVar("_R", bound=Options)


def _fail(message: str) -> ValueError:
    return ValueError(f"invalid options for pipeline: {message}")


def parse_record(
    cls: type[_R],
    data: object,
    path: str,
    *,
    nested: Mapping[str, Callable[[object, str], object]] | None = None,
) -> _R:
    """Build ``cls`` from the mapping ``data`` found at ``path`` (``"batchers.x."``):
    ``Options.parse`` with the pipeline's name for itself in every error."""
    return cls.parse(data, path=path, nested=nested, what="pipeline")


def _parse_named(cls: type[_R], what: str) -> Callable[[object, str], Mapping[str, _R]]:
    def parse(data: object, path: str) -> Mapping[str, _R]:
        if not isinstance(data, Mapping):
            raise _fail(f"{path[:-1]} must be a mapping of {what} names to options; got {data!r}")
        out: dict[str, _R] = {}
        for name, sub in data.items():
            if type(name) is not str or not name:
                raise _fail(f"{path[:-1]} names must be non-empty str; got {name!r}")
            out[name] = parse_record(cls, {} if sub is None else sub, f"{path}{name}.")
        return MappingProxyType(out)

    return parse


def resolve_producer(module: object, path: str = "producer.module") -> type[Producer]:
    """The Producer class ``module`` names: a short name, a module path or the class."""
    if is_producer_class(module):
        return module  # type: ignore[return-value]
    rule = "'memory', a module path whose PRODUCER is a Producer subclass, or a Producer subclass"
    if type(module) is not str or not module:
        raise _fail(f"{path} must be {rule}; got {module!r}")
    module_path = PRODUCER_MODULES.get(module, module)
    try:
        loaded = importlib.import_module(module_path)
    except ImportError as exc:
        raise _fail(f"{path} must be {rule}; got {module!r} ({exc})") from exc
    cls = getattr(loaded, "PRODUCER", None)
    if not is_producer_class(cls):
        raise _fail(f"{path} must be {rule}; module {module_path!r} has no Producer in PRODUCER")
    return cls  # type: ignore[return-value]


def _parse_producer(data: object, path: str) -> ProducerOptions:
    if isinstance(data, ProducerOptions):
        return data
    if not isinstance(data, Mapping):
        raise _fail(
            f"{path[:-1]} must be a mapping with module, options, concurrency; got {data!r}"
        )
    if "module" not in data:
        return parse_record(ProducerOptions, data, path)  # reports the missing module
    cls = resolve_producer(data["module"], f"{path}module")
    return parse_record(
        ProducerOptions,
        data,
        path,
        nested={
            "module": lambda _value, _path: cls,
            "options": lambda value, sub: _parse_producer_options(cls, value, sub),
        },
    )


def _parse_producer_options(cls: type[Producer], value: object, path: str) -> object:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise _fail(f"{path[:-1]} must be a mapping of the producer's options; got {value!r}")
    return cls.parse_options(value, path)


def _parse_retry(data: object, path: str) -> RetryOptions:
    return parse_record(
        RetryOptions,
        data,
        path,
        nested={"backoff": lambda value, sub: parse_record(BackoffOptions, value, sub)},
    )


def parse_pipeline_options(data: Mapping[str, object]) -> PipelineOptions:
    """Validate a pipeline's options (a nested mapping) into a ``PipelineOptions``.

    Raises ``ValueError`` naming the dotted path of the first unknown key or wrong value.
    """
    parsed = parse_record(
        PipelineOptions,
        data,
        "",
        nested={
            "producer": _parse_producer,
            "processors": _parse_named(ProcessorOptions, "processor"),
            "batchers": _parse_named(BatcherOptions, "batcher"),
            "rate_limiting": lambda v, p: (
                None if v is None else parse_record(RateLimitingOptions, v, p)
            ),
            "retry": lambda v, p: None if v is None else _parse_retry(v, p),
        },
    )
    producer = parsed.producer
    if producer.options is None:
        parsed = dataclasses.replace(
            parsed,
            producer=dataclasses.replace(
                producer, options=producer.module.parse_options({}, "producer.options.")
            ),
        )
    if parsed.partition_by is None:
        default = parsed.producer.module.default_partition_by(parsed.producer.options)
        if default is not None:
            parsed = dataclasses.replace(parsed, partition_by=default)
    for name, proc in parsed.processors.items():
        if proc.min_demand is not None and proc.min_demand >= proc.max_demand:
            raise _fail(
                f"processors.{name}.min_demand must be < max_demand ({proc.max_demand}); "
                f"got {proc.min_demand}"
            )
    return parsed
