"""``Gateway``: an inert value (servings, options, a repository) that serves the Open
Inference Protocol over HTTP as a supervised process."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from corral.gateway.dashboard import Dashboard
from corral.gateway.models import ModelTable
from corral.gateway.options import GatewayOptions
from corral.metrics import Metrics, new_registry
from corral.runtime.node import Node
from corral.runtime.process import Pid
from corral.runtime.supervisor import ChildSpec, Supervisor
from corral.serving import ModelFactory, Serving
from corral.serving.factory import check_factory, factory_spec

if TYPE_CHECKING:
    from corral.gateway.app import App as Starlette
    from corral.pipeline import Pipeline

__all__ = ["Gateway"]


class Gateway:
    """The HTTP front door of ``servings`` (each a model named ``serving.name``).

    ``options`` are ``GatewayOptions`` fields (``host``, ``port``, ``admin_token``,
    ``max_body_bytes``, ``default_timeout``, ``overload_status``, ...), validated here.
    ``repository`` maps a model name to the versions an operator declares for it
    (``{"rank": {"2": "mymodels:load_v2"}}``): the only factories a load request can swap
    to. The repository endpoints are on only with an ``admin_token``. ``pipelines`` are
    shown on the dashboard (``/dashboard``) beside the servings. Needs the ``http``
    extra (Starlette and uvicorn), imported when the app is first built.

    Put ``child_spec()`` after the servings' in a supervisor: children stop in reverse, so
    the gateway drains before the servings stop.
    """

    def __init__(
        self,
        servings: Sequence[Serving],
        *,
        repository: Mapping[str, Mapping[str, ModelFactory]] | None = None,
        pipelines: Sequence[Pipeline] = (),
        **options: object,
    ) -> None:
        self.options = GatewayOptions.from_kwargs(options)
        names = [s.name for s in servings]
        if not names or not all(isinstance(s, Serving) for s in servings):
            raise ValueError(
                f"Gateway: servings must be a non-empty list of Serving; got {servings!r}"
            )
        if len(set(names)) != len(names):
            raise ValueError(
                f"Gateway: serving names must be unique (a name is a model); got {names}"
            )
        repository = repository or {}
        if repository and self.options.admin_token is None:
            raise ValueError(
                "invalid options for gateway: a repository needs admin_token (the load and "
                "unload endpoints are on only with a bearer token)"
            )
        by_name = {s.name: s for s in servings}
        for model, versions in repository.items():
            if model not in by_name:
                raise ValueError(
                    f"Gateway: repository names model '{model}', which no serving is; "
                    f"models: {', '.join(names)}"
                )
            for version, factory in versions.items():
                if type(version) is not str or not version:
                    raise ValueError(
                        f"Gateway: repository['{model}'] versions must be non-empty str; "
                        f"got {version!r}"
                    )
                check_factory(factory, where=f"gateway repository['{model}']['{version}']")
                if by_name[model].options.kind == "port":
                    factory_spec(factory)
        self.servings = tuple(servings)
        self.repository = {m: dict(v) for m, v in repository.items()}
        self.table = ModelTable(self.servings, self.repository)
        if not all(_is_pipeline(p) for p in pipelines):
            raise ValueError(f"Gateway: pipelines must be a list of Pipeline; got {pipelines!r}")
        self.dashboard = Dashboard(self.servings, pipelines)
        self.metrics: Metrics | None = None
        """corral's Prometheus metrics behind ``/metrics`` (option ``metrics``): in a
        registry of the gateway's own, counting while the gateway process runs."""
        if self.options.metrics:
            self.metrics = Metrics(new_registry())
            for serving in self.servings:
                self.metrics.watch(serving)
        self._app: Starlette | None = None
        self._port: int | None = None

    def __repr__(self) -> str:
        where = f"{self.options.host}:{self.port}"
        return f"<Gateway {where} models={[s.name for s in self.servings]}>"

    @property
    def app(self) -> Starlette:
        """The ASGI app (built on first use; the same app the server runs). Usable on its
        own, e.g. with ``httpx.ASGITransport``, on the node's loop."""
        if self._app is None:
            from corral.gateway.app import build_app

            self._app = build_app(
                self.table,
                self.options,
                repository_on=self.options.admin_token is not None,
                dashboard=self.dashboard,
                metrics=self.metrics,
            )
        return self._app

    @property
    def port(self) -> int:
        """The port bound by the running (or last) server; ``options.port`` before one
        started (0 then means 'a free one, not chosen yet')."""
        return self.options.port if self._port is None else self._port

    def _bound(self, port: int, pid: Pid) -> None:
        self._port = port
        self.dashboard.started(pid.node)
        pid.add_exit_callback(lambda reason: self.dashboard.stopped())
        metrics = self.metrics
        if metrics is not None and not metrics.attached:
            metrics.attach()
            pid.add_exit_callback(lambda reason: metrics.detach())

    def child_spec(self, *, id: str = "gateway") -> ChildSpec:
        """A child spec for a supervisor: the ``GatewayServer`` process, listening once it
        started. Its shutdown allows ``drain_timeout`` plus 5 s for the drain."""
        app = self.app

        def start() -> object:
            from corral.gateway.server import GatewayServer

            return GatewayServer(app, self.options, self._bound, self.dashboard.stopping)

        return ChildSpec(
            id=id,
            start=start,  # type: ignore[arg-type]
            shutdown=self.options.drain_timeout + 5.0,
        )

    async def start(self, node: Node) -> Pid:
        """Start the gateway under ``node``'s root supervisor (after the servings)."""
        return await Supervisor.start_child(node.root, self.child_spec())


def _is_pipeline(value: object) -> bool:
    from corral.pipeline import Pipeline  # only when pipelines are given

    return isinstance(value, Pipeline)
