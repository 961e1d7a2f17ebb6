"""Pipeline options: one schema, errors that name the dotted path and the valid keys."""

from __future__ import annotations

import pytest

from corral.pipeline import (
    BackoffOptions,
    BatcherOptions,
    Pipeline,
    ProcessorOptions,
    RetryOptions,
)
from corral.pipeline.producers.memory import MemoryProducer, MemoryQueue

BASE: dict[str, object] = {"name": "p", "producer": {"module": "memory"}}


def error(**options: object) -> str:
    with pytest.raises(ValueError) as info:
        Pipeline(**{**BASE, **options})
    return str(info.value)


def test_an_unknown_batcher_option_names_its_dotted_path_and_the_valid_keys() -> None:
    assert error(batchers={"ml_processing": {"batch_sizy": 100}}) == (
        "invalid options for pipeline: unknown option 'batchers.ml_processing.batch_sizy'; "
        "valid options: batch_size, batch_timeout, concurrency"
    )


def test_an_unknown_top_level_option_lists_every_valid_one() -> None:
    assert error(procesors={}) == (
        "invalid options for pipeline: unknown option 'procesors'; valid options: name, "
        "producer, processors, batchers, partition_by, rate_limiting, retry, dead_letter, "
        "shutdown_timeout, context"
    )


def test_a_wrong_value_names_its_dotted_path_rule_and_value() -> None:
    assert error(batchers={"default": {"batch_size": 0}}) == (
        "invalid options for pipeline: batchers.default.batch_size must be an int >= 1; got 0"
    )
    assert error(batchers={"default": {"batch_timeout": "1s"}}) == (
        "invalid options for pipeline: batchers.default.batch_timeout must be a number > 0; "
        "got '1s'"
    )
    assert error(processors={"default": {"concurrency": True}}) == (
        "invalid options for pipeline: processors.default.concurrency must be an int >= 1; got True"
    )


def test_nested_retry_and_backoff_options_are_checked_with_their_path() -> None:
    assert error(retry={"backoff": {"multiplier": 0.5}}) == (
        "invalid options for pipeline: retry.backoff.multiplier must be a number >= 1; got 0.5"
    )
    assert error(retry={"max_attempt": 2}) == (
        "invalid options for pipeline: unknown option 'retry.max_attempt'; "
        "valid options: max_attempts, backoff"
    )


def test_required_options_say_they_are_required() -> None:
    with pytest.raises(ValueError) as info:
        Pipeline(producer={"module": "memory"})
    assert str(info.value) == "invalid options for pipeline: name is required (a non-empty str)"
    assert error(producer={}) == (
        "invalid options for pipeline: producer.module is required "
        "('memory', a module path or a Producer subclass)"
    )
    assert error(rate_limiting={"interval": 1.0}) == (
        "invalid options for pipeline: rate_limiting.allowed_messages is required (an int >= 1)"
    )


def test_the_producer_module_is_imported_by_name_and_its_options_validated() -> None:
    assert error(producer={"module": "corral.no_such_producer"}).startswith(
        "invalid options for pipeline: producer.module must be 'memory', a module path whose "
        "PRODUCER is a Producer subclass, or a Producer subclass; got 'corral.no_such_producer' "
        "(No module named 'corral.no_such_producer')"
    )
    assert error(producer={"module": "memory", "options": {"qeue": 1}}) == (
        "invalid options for pipeline: unknown option 'producer.options.qeue'; valid options: queue"
    )
    assert error(producer={"module": "memory", "options": {"queue": []}}) == (
        "invalid options for pipeline: producer.options.queue must be a MemoryQueue; got []"
    )


def test_a_producer_class_can_be_given_directly() -> None:
    queue = MemoryQueue()
    pipeline = Pipeline(name="p", producer={"module": MemoryProducer, "options": {"queue": queue}})
    assert pipeline.options.producer.module is MemoryProducer
    assert pipeline.options.producer.options.queue is queue  # type: ignore[attr-defined]


def test_processors_take_exactly_one_entry_as_in_broadway() -> None:
    assert error(processors={"a": {}, "b": {}}) == (
        "invalid options for pipeline: processors must be a mapping with exactly one "
        "processor name; got {'a': {}, 'b': {}}"
    )


def test_min_demand_must_stay_below_max_demand() -> None:
    assert error(processors={"default": {"max_demand": 10, "min_demand": 10}}) == (
        "invalid options for pipeline: processors.default.min_demand must be < max_demand "
        "(10); got 10"
    )


def test_a_dead_letter_target_the_producer_does_not_know_is_rejected() -> None:
    assert error(dead_letter="dlq") == (
        "invalid options for pipeline: dead_letter must be a callable or a target that "
        "producer MemoryProducer supports; got 'dlq'"
    )


def test_defaults_fill_in_what_is_not_given() -> None:
    options = Pipeline(**BASE).options
    assert dict(options.processors) == {"default": ProcessorOptions()}
    assert dict(options.batchers) == {}
    assert options.processor == ("default", ProcessorOptions(max_demand=50, min_demand=None))
    assert options.processors["default"].effective_min_demand == 25
    assert options.retry is None and options.rate_limiting is None
    assert options.shutdown_timeout == 30.0
    assert isinstance(options.producer.options.queue, MemoryQueue)  # type: ignore[attr-defined]


def test_the_seed_options_parse_into_records() -> None:
    options = Pipeline(
        name="ml",
        producer={"module": "memory", "concurrency": 1},
        processors={"default": {"concurrency": 4}},
        batchers={"ml_processing": {"batch_size": 100, "batch_timeout": 1.0, "concurrency": 2}},
        retry={"max_attempts": 4, "backoff": {"initial": 0.25}},
    ).options
    assert options.batchers["ml_processing"] == BatcherOptions(
        batch_size=100, batch_timeout=1.0, concurrency=2
    )
    assert options.retry == RetryOptions(max_attempts=4, backoff=BackoffOptions(initial=0.25))


def test_the_retry_backoff_grows_by_the_multiplier_up_to_the_max() -> None:
    retry = RetryOptions(backoff=BackoffOptions(initial=0.5, max=3.0, multiplier=2.0))
    assert [retry.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_the_schema_documents_itself() -> None:
    text = BatcherOptions.describe()
    assert text.splitlines()[0] == (
        "batch_size (default 100; an int >= 1): A batch is cut when it holds this many messages."
    )
