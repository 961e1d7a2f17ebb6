"""Tests for corral.telemetry: the handler registry, emit, failure handling and spans."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator, Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral import telemetry
from corral.telemetry import EventName, HandlerInfo

Call = tuple[EventName, dict[str, float], dict[str, object], object]


@pytest.fixture(autouse=True)
def _detach_what_the_test_attached() -> Iterator[None]:
    before = {info.handler_id for info in telemetry.list_handlers()}
    yield
    for handler_id in {info.handler_id for info in telemetry.list_handlers()} - before:
        telemetry.detach(handler_id)


class Recorder:
    """A handler that records every call; ``name`` tells recorders apart in a shared log."""

    def __init__(self, log: list[tuple[str, Call]] | None = None, name: str = "") -> None:
        self.calls: list[Call] = []
        self._log = log
        self._name = name

    def __call__(
        self,
        event: EventName,
        measurements: Mapping[str, float],
        metadata: Mapping[str, object],
        config: object,
    ) -> None:
        call = (event, dict(measurements), dict(metadata), config)
        self.calls.append(call)
        if self._log is not None:
            self._log.append((self._name, call))


def fake_clock(*values: float) -> Callable[[], float]:
    """A clock that returns ``values`` in order and fails the test if read once more."""
    remaining = list(values)

    def clock() -> float:
        assert remaining, "the clock was read more often than the test expected"
        return remaining.pop(0)

    return clock


def raise_boom(
    event: EventName,
    measurements: Mapping[str, float],
    metadata: Mapping[str, object],
    config: object,
) -> None:
    raise RuntimeError("boom")


EVENT = ("corral", "test", "happened")

# --- emit ---------------------------------------------------------------------------------


def test_emit_calls_handlers_attached_to_that_event_in_attach_order() -> None:
    log: list[tuple[str, Call]] = []
    for name in ["b", "a", "c"]:
        telemetry.attach(f"t-{name}", EVENT, Recorder(log, name))

    telemetry.emit(EVENT, {"n": 1})

    assert [name for name, _ in log] == ["b", "a", "c"]


def test_emit_passes_event_measurements_metadata_and_config_to_the_handler() -> None:
    recorder = Recorder()
    telemetry.attach("t", EVENT, recorder, config={"level": "info"})

    telemetry.emit(EVENT, {"duration": 0.5, "count": 3}, {"name": "rank"})

    assert recorder.calls == [
        (EVENT, {"duration": 0.5, "count": 3}, {"name": "rank"}, {"level": "info"})
    ]


def test_emit_without_metadata_passes_an_empty_mapping_and_config_defaults_to_none() -> None:
    recorder = Recorder()
    telemetry.attach("t", EVENT, recorder)

    telemetry.emit(EVENT, {"n": 1})

    assert recorder.calls == [(EVENT, {"n": 1}, {}, None)]


def test_emit_calls_only_handlers_of_exactly_that_event_not_of_its_prefix_or_children() -> None:
    parent, exact, child = Recorder(), Recorder(), Recorder()
    telemetry.attach("t-parent", EVENT[:-1], parent)
    telemetry.attach("t-exact", EVENT, exact)
    telemetry.attach("t-child", (*EVENT, "more"), child)

    telemetry.emit(EVENT, {"n": 1})

    assert (len(parent.calls), len(exact.calls), len(child.calls)) == (0, 1, 0)


def test_emit_of_an_event_nobody_listens_to_does_nothing_even_for_a_malformed_name() -> None:
    bystander = Recorder()
    telemetry.attach("t", EVENT, bystander)

    telemetry.emit(("corral", "test", "nobody", "listens"), {"n": 1})
    telemetry.emit((), {})  # emit does not validate names: it is on hot paths

    assert bystander.calls == []


def test_a_handler_attached_during_an_emit_is_not_called_by_that_emit() -> None:
    late = Recorder()

    def attach_another(
        event: EventName,
        measurements: Mapping[str, float],
        metadata: Mapping[str, object],
        config: object,
    ) -> None:
        telemetry.attach("t-late", EVENT, late)

    telemetry.attach("t-early", EVENT, attach_another)
    telemetry.emit(EVENT, {"n": 1})
    assert late.calls == []

    telemetry.detach("t-early")
    telemetry.emit(EVENT, {"n": 2})
    assert late.calls == [(EVENT, {"n": 2}, {}, None)]


# --- attach / attach_many / detach / list_handlers ----------------------------------------


def test_attaching_an_id_that_is_already_attached_raises_and_keeps_the_first_handler() -> None:
    first, second = Recorder(), Recorder()
    telemetry.attach("x", EVENT, first)

    with pytest.raises(ValueError) as excinfo:
        telemetry.attach("x", ("corral", "test", "other"), second)

    assert str(excinfo.value) == (
        "telemetry.attach: handler id 'x' is already attached; detach it first or pick another id"
    )
    assert [(i.handler_id, i.event, i.handler) for i in telemetry.list_handlers()] == [
        ("x", EVENT, first)
    ]


def test_attach_many_with_an_id_that_is_already_attached_raises_and_attaches_nothing() -> None:
    telemetry.attach("x", EVENT, Recorder())

    with pytest.raises(ValueError) as excinfo:
        telemetry.attach_many("x", [("corral", "test", "a"), ("corral", "test", "b")], Recorder())

    assert str(excinfo.value) == (
        "telemetry.attach_many: handler id 'x' is already attached; "
        "detach it first or pick another id"
    )
    assert [info.event for info in telemetry.list_handlers()] == [EVENT]


def test_attach_many_attaches_one_id_to_every_event_with_one_config() -> None:
    recorder = Recorder()
    events = [("corral", "test", "a"), ("corral", "test", "b")]
    telemetry.attach_many("t", events, recorder, config=7)

    telemetry.emit(("corral", "test", "b"), {"n": 1})
    telemetry.emit(("corral", "test", "a"), {"n": 2})

    assert recorder.calls == [
        (("corral", "test", "b"), {"n": 1}, {}, 7),
        (("corral", "test", "a"), {"n": 2}, {}, 7),
    ]
    assert telemetry.list_handlers() == [
        HandlerInfo("t", ("corral", "test", "a"), recorder, 7),
        HandlerInfo("t", ("corral", "test", "b"), recorder, 7),
    ]


@pytest.mark.parametrize(
    ("events", "error", "message"),
    [
        (
            ("corral", "test"),
            TypeError,
            "telemetry.attach_many: events must be a collection of event names, not one name; "
            "got ('corral', 'test'); use attach() or wrap it: [('corral', 'test')]",
        ),
        ([], ValueError, "telemetry.attach_many: events must name at least one event; got []"),
        (
            [("a",), ("b",), ("a",)],
            ValueError,
            "telemetry.attach_many: events must not repeat; got [('a',), ('b',), ('a',)]",
        ),
    ],
)
def test_attach_many_rejects_one_name_no_names_and_repeated_names(
    events: list[EventName], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as excinfo:
        telemetry.attach_many("t", events, Recorder())

    assert str(excinfo.value) == message
    assert telemetry.list_handlers() == []


@pytest.mark.parametrize(
    ("event", "error"),
    [
        ((), ValueError),
        (("corral", ""), ValueError),
        (("corral", 1), TypeError),
        (["corral", "test"], TypeError),
        ("corral.test", TypeError),
        (None, TypeError),
    ],
)
def test_attach_rejects_an_event_name_that_is_not_a_non_empty_tuple_of_non_empty_str(
    event: object, error: type[Exception]
) -> None:
    with pytest.raises(error) as excinfo:
        telemetry.attach("t", event, Recorder())  # type: ignore[arg-type]

    assert str(excinfo.value) == (
        "telemetry.attach: an event name must be a non-empty tuple of non-empty str, "
        f'e.g. ("corral", "serving", "batch"); got {event!r}'
    )
    assert telemetry.list_handlers() == []


@pytest.mark.parametrize(("handler_id", "error"), [("", ValueError), (1, TypeError)])
def test_attach_rejects_a_handler_id_that_is_not_a_non_empty_str(
    handler_id: object, error: type[Exception]
) -> None:
    with pytest.raises(error) as excinfo:
        telemetry.attach(handler_id, EVENT, Recorder())  # type: ignore[arg-type]

    assert str(excinfo.value) == (
        f"telemetry.attach: handler id must be a non-empty str; got {handler_id!r}"
    )


def test_attach_rejects_a_handler_that_is_not_callable() -> None:
    with pytest.raises(TypeError) as excinfo:
        telemetry.attach("t", EVENT, "print")  # type: ignore[arg-type]

    assert str(excinfo.value) == (
        "telemetry.attach: handler must be callable as handler(event, measurements, metadata, "
        "config); got 'print'"
    )


def test_detach_removes_every_event_of_the_id_and_says_whether_it_was_attached() -> None:
    recorder, other = Recorder(), Recorder()
    telemetry.attach_many("t", [("corral", "test", "a"), ("corral", "test", "b")], recorder)
    telemetry.attach("t-other", ("corral", "test", "a"), other)

    assert telemetry.detach("t") is True
    assert telemetry.detach("t") is False
    telemetry.emit(("corral", "test", "a"), {"n": 1})
    telemetry.emit(("corral", "test", "b"), {"n": 1})

    assert recorder.calls == []
    assert len(other.calls) == 1
    assert [info.handler_id for info in telemetry.list_handlers()] == ["t-other"]


def test_a_detached_id_can_be_attached_again_to_another_handler() -> None:
    old, new = Recorder(), Recorder()
    telemetry.attach("t", EVENT, old)
    telemetry.detach("t")
    telemetry.attach("t", EVENT, new)

    telemetry.emit(EVENT, {"n": 1})

    assert (len(old.calls), len(new.calls)) == (0, 1)


def test_list_handlers_returns_attachments_under_the_prefix_in_attach_order() -> None:
    handler = Recorder()
    telemetry.attach("t-3", ("corral", "serving", "batch"), handler)
    telemetry.attach("t-1", ("corral", "port", "exited"), handler)
    telemetry.attach_many(
        "t-2",
        [
            ("corral", "serving", "overloaded"),
            (
                "corral",
                "servingx",
            ),
        ],
        handler,
    )

    listed = telemetry.list_handlers(("corral", "serving"))

    assert [(info.handler_id, info.event) for info in listed] == [
        ("t-3", ("corral", "serving", "batch")),
        ("t-2", ("corral", "serving", "overloaded")),
    ]
    assert [info.handler_id for info in telemetry.list_handlers(("corral",))] == [
        "t-3",
        "t-1",
        "t-2",
        "t-2",
    ]


def test_list_handlers_rejects_a_prefix_that_is_not_a_tuple_of_str() -> None:
    with pytest.raises(TypeError) as excinfo:
        telemetry.list_handlers(["corral"])  # type: ignore[arg-type]

    assert str(excinfo.value) == (
        "telemetry.list_handlers: prefix must be a tuple of str; got ['corral']"
    )


short_names = st.tuples(st.sampled_from(["corral", "app"]), st.sampled_from(["port", "serving"]))
long_names = st.builds(lambda name, last: (*name, last), short_names, st.sampled_from(["a", "b"]))


@given(
    events=st.lists(short_names | long_names, unique=True, max_size=8),
    prefix=st.sampled_from([(), ("corral",), ("app", "port"), ("corral", "serving", "a")]),
)
def test_list_handlers_lists_exactly_the_events_that_start_with_the_prefix(
    events: list[EventName], prefix: EventName
) -> None:
    ids = [f"prop-{i}" for i in range(len(events))]
    try:
        for handler_id, event in zip(ids, events, strict=True):
            telemetry.attach(handler_id, event, Recorder())

        listed = [(i.handler_id, i.event) for i in telemetry.list_handlers(prefix)]

        expected = [(h, e) for h, e in zip(ids, events, strict=True) if e[: len(prefix)] == prefix]
        assert listed == expected
    finally:
        for handler_id in ids:
            telemetry.detach(handler_id)


# --- failing handlers -------------------------------------------------------------------


def test_a_handler_that_raises_is_detached_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="corral.telemetry")
    after = Recorder()
    telemetry.attach("t-broken", EVENT, raise_boom)
    telemetry.attach("t-after", EVENT, after)

    telemetry.emit(EVENT, {"n": 1})
    telemetry.emit(EVENT, {"n": 2})

    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            "corral.telemetry",
            logging.ERROR,
            "telemetry.emit: handler 't-broken' raised on event "
            "('corral', 'test', 'happened'); it has been detached",
        )
    ]
    exc_info = caplog.records[0].exc_info
    assert exc_info is not None
    assert repr(exc_info[1]) == "RuntimeError('boom')"
    assert [call[1] for call in after.calls] == [{"n": 1}, {"n": 2}]
    assert [info.handler_id for info in telemetry.list_handlers()] == ["t-after"]


def test_a_handler_that_raises_on_one_event_is_detached_from_all_its_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="corral.telemetry")
    telemetry.attach_many("t", [EVENT, ("corral", "test", "other")], raise_boom)

    telemetry.emit(("corral", "test", "other"), {"n": 1})

    assert telemetry.list_handlers() == []
    assert len(caplog.records) == 1


def test_a_failing_handler_does_not_take_down_a_newer_attachment_with_the_same_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="corral.telemetry")
    replacement = Recorder()

    def replace_itself_then_fail(
        event: EventName,
        measurements: Mapping[str, float],
        metadata: Mapping[str, object],
        config: object,
    ) -> None:
        telemetry.detach("t")
        telemetry.attach("t", EVENT, replacement)
        raise RuntimeError("boom")

    telemetry.attach("t", EVENT, replace_itself_then_fail)
    telemetry.emit(EVENT, {"n": 1})
    telemetry.emit(EVENT, {"n": 2})

    assert [info.handler for info in telemetry.list_handlers()] == [replacement]
    assert [call[1] for call in replacement.calls] == [{"n": 2}]
    assert len(caplog.records) == 1


class Stop(BaseException):
    """A BaseException that is not an Exception, like KeyboardInterrupt."""


def test_a_base_exception_from_a_handler_propagates_and_leaves_it_attached() -> None:
    def stop(
        event: EventName,
        measurements: Mapping[str, float],
        metadata: Mapping[str, object],
        config: object,
    ) -> None:
        raise Stop

    telemetry.attach("t", EVENT, stop)

    with pytest.raises(Stop):
        telemetry.emit(EVENT, {"n": 1})

    assert [info.handler_id for info in telemetry.list_handlers()] == ["t"]


# --- span ---------------------------------------------------------------------------------

PREFIX = ("corral", "test", "work")
START, STOP, EXCEPTION = (*PREFIX, "start"), (*PREFIX, "stop"), (*PREFIX, "exception")


def test_span_emits_start_and_stop_with_duration_from_the_given_clock() -> None:
    recorder = Recorder()
    telemetry.attach_many("t", [START, STOP, EXCEPTION], recorder)

    with telemetry.span(PREFIX, {"model": "rank"}, clock=fake_clock(10.0, 10.25)):
        assert recorder.calls == [(START, {"monotonic_time": 10.0}, {"model": "rank"}, None)]

    assert recorder.calls[1:] == [
        (STOP, {"duration": 0.25, "monotonic_time": 10.25}, {"model": "rank"}, None)
    ]


def test_span_emits_exception_and_reraises() -> None:
    recorder = Recorder()
    telemetry.attach_many("t", [START, STOP, EXCEPTION], recorder)

    with (
        pytest.raises(ValueError, match="bad input") as excinfo,
        telemetry.span(PREFIX, {"model": "rank"}, clock=fake_clock(1.0, 1.5)),
    ):
        raise ValueError("bad input")

    assert recorder.calls == [
        (START, {"monotonic_time": 1.0}, {"model": "rank"}, None),
        (
            EXCEPTION,
            {"duration": 0.5, "monotonic_time": 1.5},
            {"model": "rank", "kind": ValueError, "reason": excinfo.value},
            None,
        ),
    ]


def test_span_without_metadata_emits_empty_metadata() -> None:
    recorder = Recorder()
    telemetry.attach("t", STOP, recorder)

    with telemetry.span(PREFIX, clock=fake_clock(0.0, 2.0)):
        pass

    assert recorder.calls == [(STOP, {"duration": 2.0, "monotonic_time": 2.0}, {}, None)]


@pytest.mark.parametrize("suffix", ["start", "stop", "exception"])
def test_span_measures_when_any_one_of_its_three_events_is_attached(suffix: str) -> None:
    recorder = Recorder()
    telemetry.attach("t", (*PREFIX, suffix), recorder)
    reads: list[float] = []

    def clock() -> float:
        reads.append(float(len(reads)))
        return reads[-1]

    with telemetry.span(PREFIX, clock=clock):
        pass

    assert reads == [0.0, 1.0]


def test_span_with_nothing_attached_does_not_read_the_clock() -> None:
    telemetry.attach("t-elsewhere", (*PREFIX, "other"), Recorder())
    telemetry.attach("t-child", (*PREFIX, "inner", "stop"), Recorder())

    with telemetry.span(PREFIX, clock=fake_clock()):
        pass
    with pytest.raises(KeyError), telemetry.span(PREFIX, clock=fake_clock()):
        raise KeyError("still propagates")


def test_span_around_a_cancelled_await_emits_exception_with_cancelled_error() -> None:
    recorder = Recorder()
    telemetry.attach_many("t", [STOP, EXCEPTION], recorder)

    async def main() -> None:
        entered = asyncio.Event()

        async def body() -> None:
            with telemetry.span(PREFIX, clock=fake_clock(5.0, 7.0)):
                entered.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(body())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())

    [(event, measurements, metadata, _)] = recorder.calls
    assert (event, measurements) == (EXCEPTION, {"duration": 2.0, "monotonic_time": 7.0})
    assert metadata["kind"] is asyncio.CancelledError
    assert isinstance(metadata["reason"], asyncio.CancelledError)


# --- threads ------------------------------------------------------------------------------


def test_attach_and_detach_from_many_threads_while_emitting_keep_the_registry_consistent() -> None:
    threads_n, rounds = 8, 200
    barrier = threading.Barrier(threads_n + 1)
    done = threading.Event()
    errors: list[BaseException] = []
    handler = Recorder()

    def churn(t: int) -> None:
        try:
            barrier.wait()
            for r in range(rounds):
                telemetry.attach(f"thread-{t}-{r}", EVENT, handler)
                if r % 2 == 0:
                    assert telemetry.detach(f"thread-{t}-{r}") is True
        except BaseException as exc:  # reported below; a thread cannot fail the test itself
            errors.append(exc)

    def emitter() -> None:
        barrier.wait()
        while not done.is_set():
            telemetry.emit(EVENT, {"n": 1})

    workers = [threading.Thread(target=churn, args=(t,)) for t in range(threads_n)]
    emitting = threading.Thread(target=emitter)
    for thread in [*workers, emitting]:
        thread.start()
    for thread in workers:
        thread.join()
    done.set()
    emitting.join()

    assert errors == []
    expected = {f"thread-{t}-{r}" for t in range(threads_n) for r in range(1, rounds, 2)}
    assert {info.handler_id for info in telemetry.list_handlers()} == expected
    assert len(telemetry.list_handlers()) == len(expected)


def test_has_handlers_tells_whether_anything_listens_to_exactly_that_event() -> None:
    event = ("corral", "test", "has_handlers")
    assert telemetry.has_handlers(event) is False
    telemetry.attach("has-handlers-probe", event, lambda *args: None)
    try:
        assert telemetry.has_handlers(event) is True
        assert telemetry.has_handlers(event[:2]) is False
    finally:
        telemetry.detach("has-handlers-probe")
    assert telemetry.has_handlers(event) is False


def test_a_span_begun_by_hand_carries_start_measurements_and_what_stop_adds() -> None:
    recorder = Recorder()
    telemetry.attach_many("t", [START, STOP, EXCEPTION], recorder)

    span = telemetry.start_span(
        PREFIX, {"model": "rank"}, clock=fake_clock(2.0, 2.5), measurements={"size": 4}
    )
    assert span is not None and telemetry.has_span_handlers(PREFIX)
    span.stop({"result": "ok"}, successful=3, failed=1)
    assert recorder.calls == [
        (START, {"monotonic_time": 2.0, "size": 4}, {"model": "rank"}, None),
        (
            STOP,
            {"duration": 0.5, "monotonic_time": 2.5, "size": 4, "successful": 3, "failed": 1},
            {"model": "rank", "result": "ok"},
            None,
        ),
    ]
    recorder.calls.clear()
    error = RuntimeError("boom")
    span = telemetry.start_span(PREFIX, clock=fake_clock(0.0, 1.0))
    assert span is not None
    span.exception(error)
    assert recorder.calls[1] == (
        EXCEPTION,
        {"duration": 1.0, "monotonic_time": 1.0},
        {"kind": RuntimeError, "reason": error},
        None,
    )


def test_start_span_with_nothing_attached_emits_nothing_and_reads_no_clock() -> None:
    def clock() -> float:
        raise AssertionError("the clock was read")

    assert not telemetry.has_span_handlers(PREFIX)
    assert telemetry.start_span(PREFIX, clock=clock) is None
