"""Prometheus metrics from corral's telemetry events (extra ``corral[metrics]``).

The one module that imports ``prometheus_client`` (lazily, on the first ``Metrics``). One
telemetry handler turns the events of every layer into metrics in a Prometheus
``CollectorRegistry``; two gauges are read from the watched servings' ``statistics()`` when
the registry is scraped::

    from corral import metrics
    m = metrics.attach()                 # prometheus_client.REGISTRY by default
    m.watch(serving)                     # for the queue-length and partitions-up gauges
    server = metrics.serve(9100)         # or the gateway's /metrics (GatewayOptions.metrics)
    ...
    server.close(); m.detach()

Every label takes values from a bounded set: names the code or the configuration gives
(serving, version, supervisor, child id, pipeline, stage, trainer) and fixed vocabularies
(``outcome``, ``reason``), never a pid or a message. The metrics, their labels and the event
each comes from:

- ``corral_serving_requests_total{serving,version,outcome}``: requests by how they ended --
  ``completed``, ``failed``, ``expired``, ``cancelled``, ``overloaded``, ``invalid`` (from
  ``("corral", "serving", "requests")``, one event per batch or refusal);
- ``corral_serving_request_duration_seconds{serving}`` (histogram): one sample per batch, its
  oldest request's arrival to answer (the batch event's ``wait + compute``), the slowest
  request of the batch;
- ``corral_serving_batch_size{serving}`` (histogram): real (unpadded) samples per batch;
- ``corral_serving_swaps_total{serving,outcome}``: ``swapped`` or ``failed``;
- ``corral_serving_queue_length{serving}``, ``corral_serving_partitions_up{serving}``
  (gauges, read at scrape time from watched servings; partitions of the current version not
  down);
- ``corral_serving_bucket_samples_per_second{serving,bucket}``,
  ``corral_serving_bucket_mean_batch_size{serving,bucket}``,
  ``corral_serving_bucket_padding_ratio{serving,bucket}`` (gauges, read at scrape time: the
  last 10 s of ``statistics().buckets``; ``bucket`` is the sequence length, or ``all``
  without sequence buckets);
- ``corral_supervisor_restarts_total{supervisor,child}``: child exits a supervisor restarted
  (``child_exited`` with action ``restart``); ``supervisor`` is its label (registered name,
  or the path its parent gave it, e.g. ``rank/partitions-v1``), or its kind
  (``Supervisor``) when it has none;
- ``corral_process_crashes_total``: processes that exited with an exception;
- ``corral_port_worker_exits_total{reason}``: ``stopped``, ``breach``, ``signal`` or
  ``exit_status`` (see ``("corral", "port", "worker_exited")``);
- ``corral_pipeline_messages_total{pipeline,stage,outcome}``: ``stage`` is
  ``processor.<name>`` (each message once, after ``handle_message`` and its retries; from
  ``("corral", "pipeline", "processed")``, one event per chunk) or ``batcher.<name>`` (per
  message of a ``handle_batch`` call; from the batch span); ``outcome`` is ``successful`` or
  ``failed`` (a hook that raised fails its messages);
- ``corral_pipeline_batch_duration_seconds{pipeline,batcher}`` (histogram);
- ``corral_train_rounds_total{trainer}`` and ``corral_train_loss{trainer}`` (gauge, the last
  round's).

The handler runs in the emitting task, on the node's loop, and costs a dictionary lookup
and a few additions per event, on plain numbers and with no lock; prometheus-client's metric
families are built from them only when the registry is scraped. Durations are seconds on the
node's clock (virtual under ``corral.testing``).
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import itertools
import threading
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

from corral import telemetry
from corral._extras import require
from corral.errors import ServingNotRunning

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.metrics_core import GaugeMetricFamily
    from prometheus_client.registry import CollectorRegistry

    from corral.serving import Serving, ServingStatistics

__all__ = [
    "CONTENT_TYPE",
    "SCRAPE_WAIT",
    "Metrics",
    "MetricsServer",
    "attach",
    "new_registry",
    "serve",
]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The media type of ``Metrics.exposition()``: Prometheus's text format."""

_EventHandler = Callable[[Mapping[str, float], Mapping[str, object]], None]

_ids = itertools.count(1)

SCRAPE_WAIT: Final = 1.0
"""Seconds a scrape from another thread waits for a serving's loop to read its statistics;
past it that serving's gauges are left out of the scrape."""


def _prometheus() -> ModuleType:
    return require("prometheus_client", extra="metrics", by="corral.metrics")


class Metrics:
    """corral's metrics in ``registry`` (``prometheus_client.REGISTRY`` when None).

    Made, the metrics are registered and at zero, and nothing listens yet: ``attach`` starts
    the telemetry handler, ``detach`` stops it (the values stay, a scrape still shows them),
    ``close`` also takes the metrics out of the registry. One ``Metrics`` per registry:
    a second raises ``ValueError``. Needs ``corral[metrics]`` (``MissingExtra`` otherwise).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        prom = _prometheus()
        self.registry: CollectorRegistry = prom.REGISTRY if registry is None else registry
        self.handler_id = f"corral-metrics-{next(_ids)}"
        self._watched: dict[str, tuple[Serving, asyncio.AbstractEventLoop | None]] = {}
        self._lock = threading.Lock()
        self._stages: dict[tuple[object, str, object], tuple[_Child, _Child]] = {}
        c, h = _Family.counter, _Family.histogram
        self._requests = c(
            "corral_serving_requests", "Serving requests by how they ended.",
            ("serving", "version", "outcome"),
        )  # fmt: skip
        self._request_duration = h(
            "corral_serving_request_duration_seconds",
            "Arrival to answer of each batch's oldest request (wait + compute), seconds.",
            ("serving",), _DURATION_BUCKETS,
        )  # fmt: skip
        self._batch_size = h(
            "corral_serving_batch_size", "Real (unpadded) samples per batch.", ("serving",),
            (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
        )  # fmt: skip
        self._swaps = c("corral_serving_swaps", "Model swaps by outcome.", ("serving", "outcome"))
        self._restarts = c(
            "corral_supervisor_restarts", "Child exits a supervisor restarted.",
            ("supervisor", "child"),
        )  # fmt: skip
        self._crashes = c("corral_process_crashes", "Processes that exited with an exception.", ())
        self._crashes.labels()  # an unlabelled counter shows its 0 from the start
        self._worker_exits = c(
            "corral_port_worker_exits", "Port worker OS processes that ended, by why.",
            ("reason",),
        )  # fmt: skip
        self._pipeline_messages = c(
            "corral_pipeline_messages", "Pipeline messages handled, by stage and outcome.",
            ("pipeline", "stage", "outcome"),
        )  # fmt: skip
        self._pipeline_batch_duration = h(
            "corral_pipeline_batch_duration_seconds", "handle_batch calls, seconds.",
            ("pipeline", "batcher"), _DURATION_BUCKETS,
        )  # fmt: skip
        self._train_rounds = c("corral_train_rounds", "Training rounds.", ("trainer",))
        self._train_loss = _Family.gauge(
            "corral_train_loss", "The last round's loss.", ("trainer",)
        )
        self._families = (
            self._requests, self._request_duration, self._batch_size, self._swaps, self._restarts,
            self._crashes, self._worker_exits, self._pipeline_messages,
            self._pipeline_batch_duration, self._train_rounds, self._train_loss,
        )  # fmt: skip
        self._collector: _Collector | None = _Collector(self)
        try:
            self.registry.register(self._collector)
        except ValueError as exc:
            raise ValueError(
                f"corral.metrics: the registry already holds corral's metrics ({exc}); close "
                "the other Metrics first, or pass registry=corral.metrics.new_registry()"
            ) from None
        self._handlers: dict[tuple[str, ...], _EventHandler] = {
            ("corral", "serving", "requests"): self._on_requests,
            ("corral", "serving", "batch"): self._on_batch,
            ("corral", "serving", "swapped"): self._on_swapped,
            ("corral", "serving", "swapped", "failed"): self._on_swap_failed,
            ("corral", "supervisor", "child_exited"): self._on_child_exited,
            ("corral", "process", "crashed"): self._on_crashed,
            ("corral", "port", "worker_exited"): self._on_worker_exited,
            ("corral", "pipeline", "processed"): self._on_processed,
            ("corral", "pipeline", "batch", "stop"): self._on_batch_stop,
            ("corral", "pipeline", "batch", "exception"): self._on_batch_exception,
            ("corral", "train", "round"): self._on_round,
        }

    def __repr__(self) -> str:
        return f"<corral.metrics.Metrics {self.handler_id} attached={self.attached}>"

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def attached(self) -> bool:
        """Whether the telemetry handler listens now."""
        return any(info.handler_id == self.handler_id for info in telemetry.list_handlers())

    def attach(self) -> Metrics:
        """Start listening to corral's events; returns self. ``ValueError`` if attached."""
        telemetry.attach_many(self.handler_id, self._handlers, _handle, self._handlers)
        return self

    def detach(self) -> None:
        """Stop listening (the values stay in the registry). Idempotent."""
        telemetry.detach(self.handler_id)

    def close(self) -> None:
        """Detach, and take corral's metrics out of the registry. Idempotent."""
        self.detach()
        collector, self._collector = self._collector, None
        if collector is not None:
            self.registry.unregister(collector)

    def watch(self, serving: Serving) -> None:
        """Report ``serving``'s queue length and partitions up (by its name) at each scrape.

        Call it on the node's loop: a scrape from another thread (``serve``) then reads the
        statistics on that loop, waiting at most ``SCRAPE_WAIT`` seconds. A serving that is
        not running is left out of the scrape."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            self._watched[serving.name] = (serving, loop)

    def unwatch(self, serving: Serving) -> None:
        """Stop reporting ``serving``'s gauges."""
        with self._lock:
            self._watched.pop(serving.name, None)

    def exposition(self) -> bytes:
        """The registry in Prometheus's text format (media type ``CONTENT_TYPE``)."""
        data: bytes = _prometheus().generate_latest(self.registry)
        return data

    # -- the handler (on the emitting task) -------------------------------------------------

    def _on_requests(self, m: Mapping[str, float], meta: Mapping[str, object]) -> None:
        labels = (str(meta["serving"]), str(meta["version"]), str(meta["outcome"]))
        self._requests.labels(*labels).inc(m["count"])

    def _on_batch(self, m: Mapping[str, float], meta: Mapping[str, object]) -> None:
        name = str(meta["serving"])
        self._request_duration.labels(name).observe(m["wait"] + m["compute"])
        self._batch_size.labels(name).observe(m["size"])

    def _on_swapped(self, m: Mapping[str, float], meta: Mapping[str, object]) -> None:
        self._swaps.labels(str(meta["serving"]), "swapped").inc()

    def _on_swap_failed(self, m: Mapping[str, float], meta: Mapping[str, object]) -> None:
        self._swaps.labels(str(meta["serving"]), "failed").inc()

    def _on_child_exited(self, m: Mapping[str, float], meta: Mapping[str, object]) -> None:
        report = meta["report"]
        if getattr(report, "action", None) == "restart":
            supervisor = meta["supervisor"]
            # pid.label: its registered name, else the label its parent gave it.
            name = getattr(supervisor, "label", None) or getattr(supervisor, "actor_type", "")
            self._restarts.labels(str(name), str(meta["child_id"])).inc()

    def _on_crashed(self, m: Mapping[str, float], meta: Mapping[str, object]) -> None:
        self._crashes.labels().inc()

    def _on_worker_exited(self, m: Mapping[str, float], meta: Mapping[str, object]) -> None:
        self._worker_exits.labels(str(meta["reason"])).inc()

    def _on_processed(self, m: Mapping[str, float], meta: Mapping[str, object]) -> None:
        ok, failed = self._stage(meta["pipeline"], "processor", meta["processor"])
        if n := m["successful"]:
            ok.value += n
        if n := m["failed"]:
            failed.value += n

    def _stage(self, pipeline: object, kind: str, name: object) -> tuple[_Child, _Child]:
        """The (successful, failed) series of a pipeline stage, looked up once."""
        key = (pipeline, kind, name)
        pair = self._stages.get(key)
        if pair is None:
            labels = (str(pipeline), f"{kind}.{name}")
            family = self._pipeline_messages
            pair = family.labels(*labels, "successful"), family.labels(*labels, "failed")
            self._stages[key] = pair
        return pair

    def _on_batch_stop(self, m: Mapping[str, float], meta: Mapping[str, object]) -> None:
        ok, failed = self._stage(meta["pipeline"], "batcher", meta["batcher"])
        ok.value += m["successful"]
        failed.value += m["failed"]
        self._batch_duration(meta).observe(m["duration"])

    def _on_batch_exception(self, m: Mapping[str, float], meta: Mapping[str, object]) -> None:
        self._stage(meta["pipeline"], "batcher", meta["batcher"])[1].value += m["size"]
        self._batch_duration(meta).observe(m["duration"])

    def _batch_duration(self, meta: Mapping[str, object]) -> _Child:
        return self._pipeline_batch_duration.labels(str(meta["pipeline"]), str(meta["batcher"]))

    def _on_round(self, m: Mapping[str, float], meta: Mapping[str, object]) -> None:
        trainer = str(meta["trainer"])
        self._train_rounds.labels(trainer).inc()
        self._train_loss.labels(trainer).set(m["loss"])

    # -- the gauges (at scrape time) --------------------------------------------------------

    def _statistics(self) -> Iterator[ServingStatistics]:
        with self._lock:
            watched = list(self._watched.values())
        for serving, loop in watched:
            try:
                yield _statistics_of(serving, loop)
            except (ServingNotRunning, concurrent.futures.TimeoutError):
                continue


def _handle(
    event: tuple[str, ...],
    measurements: Mapping[str, float],
    metadata: Mapping[str, object],
    config: object,
) -> None:
    handlers: dict[tuple[str, ...], _EventHandler] = config  # type: ignore[assignment]
    handlers[event](measurements, metadata)


def _statistics_of(serving: Serving, loop: asyncio.AbstractEventLoop | None) -> ServingStatistics:
    """``serving.statistics()`` read on ``loop`` (the thread that owns the serving)."""
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is None or running is loop or loop.is_closed() or not loop.is_running():
        return serving.statistics()
    future: concurrent.futures.Future[ServingStatistics] = concurrent.futures.Future()

    def read() -> None:
        try:
            future.set_result(serving.statistics())
        except Exception as exc:
            future.set_exception(exc)

    loop.call_soon_threadsafe(read)
    return future.result(timeout=SCRAPE_WAIT)


_DURATION_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Upper bounds (seconds) of the duration histograms' buckets; ``+Inf`` is added."""


class _Child:
    """One labelled series: a plain float (counter, gauge), or bucket counts and a sum
    (histogram). Updated by the handler on the emitting thread with no lock: a scrape from
    another thread reads numbers that each update leaves whole (the GIL), so a scrape may
    see a histogram's count one observation ahead of its sum, never a torn number."""

    __slots__ = ("bounds", "counts", "total", "value")

    def __init__(self, bounds: tuple[float, ...] | None) -> None:
        self.value = 0.0
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1) if bounds is not None else []
        self.total = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def set(self, value: float) -> None:
        self.value = value

    def observe(self, value: float) -> None:
        assert self.bounds is not None
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value


class _Family:
    """A metric and its labelled series, kept as plain numbers: prometheus-client's own
    metric objects take a lock per update, which the hot path does not need (every update
    comes from the node's loop). The registry sees them through ``_Collector``."""

    def __init__(
        self,
        kind: str,
        name: str,
        doc: str,
        labels: tuple[str, ...],
        bounds: tuple[float, ...] | None,
    ) -> None:
        self.kind = kind
        self.name = name
        self.doc = doc
        self.label_names = labels
        self.bounds = bounds
        self.series: dict[tuple[str, ...], _Child] = {}

    @classmethod
    def counter(cls, name: str, doc: str, labels: tuple[str, ...]) -> _Family:
        return cls("counter", name, doc, labels, None)

    @classmethod
    def gauge(cls, name: str, doc: str, labels: tuple[str, ...]) -> _Family:
        return cls("gauge", name, doc, labels, None)

    @classmethod
    def histogram(
        cls, name: str, doc: str, labels: tuple[str, ...], bounds: tuple[float, ...]
    ) -> _Family:
        return cls("histogram", name, doc, labels, tuple(float(b) for b in bounds))

    def labels(self, *values: str) -> _Child:
        child = self.series.get(values)
        if child is None:
            child = self.series[values] = _Child(self.bounds)
        return child

    def family(self, core: ModuleType) -> Any:
        """This metric as a prometheus-client metric family, for a scrape."""
        labels = list(self.label_names)
        series = list(self.series.items())  # one C-level copy: safe from another thread
        if self.kind == "counter":
            fam = core.CounterMetricFamily(self.name, self.doc, labels=labels)
            for key, child in series:
                fam.add_metric(list(key), child.value)
        elif self.kind == "gauge":
            fam = core.GaugeMetricFamily(self.name, self.doc, labels=labels)
            for key, child in series:
                fam.add_metric(list(key), child.value)
        else:
            fam = core.HistogramMetricFamily(self.name, self.doc, labels=labels)
            bounds = [*(_float_str(b) for b in self.bounds or ()), "+Inf"]
            for key, child in series:
                counts, total = list(child.counts), child.total
                cumulative = list(itertools.accumulate(counts))
                fam.add_metric(list(key), list(zip(bounds, cumulative, strict=True)), total)
        return fam


def _float_str(bound: float) -> str:
    return repr(float(bound))


class _Collector:
    """What the registry scrapes: every ``_Family`` of a ``Metrics``, and the serving gauges
    read from ``statistics()`` at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._core = require("prometheus_client.core", extra="metrics", by="corral.metrics")
        self._metrics = metrics

    def describe(self) -> list[Any]:
        return [f.family(self._core) for f in self._metrics._families] + self._gauges()

    def collect(self) -> list[Any]:
        families = [f.family(self._core) for f in self._metrics._families]
        queue, up, rate, size, padding = gauges = self._gauges()
        for stats in self._metrics._statistics():
            queue.add_metric([stats.name], stats.queue_length)
            live = [p for p in stats.partitions if p.version == stats.version]
            up.add_metric([stats.name], sum(p.state not in ("down", "draining") for p in live))
            for b in stats.buckets:
                labels = [stats.name, "all" if b.bucket is None else str(b.bucket)]
                rate.add_metric(labels, b.window_throughput)
                size.add_metric(labels, b.window_mean_batch_size)
                padding.add_metric(labels, b.window_padding)
        return families + gauges

    def _gauges(self) -> list[GaugeMetricFamily]:
        family = self._core.GaugeMetricFamily
        return [
            family("corral_serving_queue_length", "Requests queued.", labels=["serving"]),
            family(
                "corral_serving_partitions_up",
                "Partitions of the current version that are up.",
                labels=["serving"],
            ),
            family(
                "corral_serving_bucket_samples_per_second",
                "Samples answered per second over the last 10 s, per sequence bucket.",
                labels=["serving", "bucket"],
            ),
            family(
                "corral_serving_bucket_mean_batch_size",
                "Mean real batch size over the last 10 s, per sequence bucket.",
                labels=["serving", "bucket"],
            ),
            family(
                "corral_serving_bucket_padding_ratio",
                "Fraction of computed positions that were padding over the last 10 s, per "
                "sequence bucket.",
                labels=["serving", "bucket"],
            ),
        ]


def new_registry() -> CollectorRegistry:
    """A fresh, empty ``prometheus_client.CollectorRegistry``: for a ``Metrics`` of its own,
    apart from the process-wide ``REGISTRY`` (the gateway's ``/metrics`` uses one)."""
    registry: CollectorRegistry = _prometheus().CollectorRegistry()
    return registry


def attach(registry: CollectorRegistry | None = None) -> Metrics:
    """Make corral's metrics in ``registry`` (``prometheus_client.REGISTRY`` when None) and
    start listening to corral's events. ``detach()`` the result to stop, ``close()`` to also
    unregister them. ``ValueError`` if the registry has them already."""
    return Metrics(registry).attach()


class MetricsServer:
    """An HTTP server of ``/metrics`` on its own thread (``serve``); ``close`` stops it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.host: str = str(server.server_address[0])
        self.port: int = int(server.server_address[1])

    def __repr__(self) -> str:
        return f"<corral.metrics.MetricsServer http://{self.host}:{self.port}/metrics>"

    def close(self) -> None:
        """Stop serving and wait for the thread to end (blocks up to one poll interval,
        0.5 s). Idempotent."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()


def serve(port: int, host: str = "127.0.0.1", *, metrics: Metrics | None = None) -> MetricsServer:
    """Serve ``metrics``'s registry (``prometheus_client.REGISTRY`` when None) over HTTP on
    ``host:port`` from a thread of its own (prometheus-client's server; any path answers),
    without the gateway. Loopback only by default: anyone who can reach it reads the
    metrics. ``port=0`` picks a free port (``MetricsServer.port``). Returns once bound."""
    prom = _prometheus()
    registry = prom.REGISTRY if metrics is None else metrics.registry
    server, thread = prom.start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server, thread)
