"""The gateway's ASGI app, on Starlette: the only module that imports Starlette.

Each endpoint reads the request, calls the model table or the serving, and answers; every
refusal is an ``HttpProblem`` answered as ``{"error": message}`` with its status. A request
body is read as it streams in and refused with 413 as soon as it passes ``max_body_bytes``
(or at once when its Content-Length says it will), so it is never buffered past the limit.

**Cancellation on disconnect.** While an infer request waits for its serving, the handler
also waits for the client's ``http.disconnect``; if it comes first, the serving call is
cancelled, which takes the request out of the serving's queue (or drops its result if its
batch is running): ``statistics().cancelled`` counts it. Both waits are tasks owned by the
handler, which cancels and awaits what is left however it ends.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping

from corral._extras import require

require("starlette", extra="http", by="corral's HTTP gateway")

from starlette.applications import Starlette  # noqa: E402
from starlette.exceptions import HTTPException  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import Response, StreamingResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402
from starlette.types import Receive  # noqa: E402

from corral import __version__  # noqa: E402
from corral.gateway.dashboard import (  # noqa: E402
    HEADERS,
    STATIC,
    Dashboard,
    check_token,
    static_file,
)
from corral.gateway.models import Model, ModelTable  # noqa: E402
from corral.gateway.openapi import openapi_schema  # noqa: E402
from corral.gateway.options import GatewayOptions  # noqa: E402
from corral.gateway.problems import BadRequest, HttpProblem, problem_for  # noqa: E402
from corral.gateway.protocol import infer_response, parse_infer, parse_json  # noqa: E402
from corral.metrics import CONTENT_TYPE, Metrics  # noqa: E402
from corral.serving import Result  # noqa: E402

__all__ = ["App", "build_app"]

App = Starlette
"""The gateway's ASGI app type (for annotations outside this module, the one that imports
starlette)."""

logger = logging.getLogger("corral.gateway")

TIMEOUT_HEADER = "corral-timeout"
"""Request header: the request's deadline in seconds from its arrival."""

_Endpoint = Callable[[Request], Awaitable[Response]]


def _json(status: int, doc: object, headers: Mapping[str, str] | None = None) -> Response:
    body = json.dumps(doc, separators=(",", ":")).encode()
    return Response(body, status, headers=headers, media_type="application/json")


def _problem(problem: HttpProblem) -> Response:
    return _json(problem.status, {"error": problem.message}, problem.headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 beyond ``limit`` bytes without reading further."""
    declared = request.headers.get("content-length")
    too_large = HttpProblem(
        413, f"the body must be at most max_body_bytes={limit} bytes", {"Connection": "close"}
    )
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("header Content-Length", "a number of bytes", declared)
        if int(declared) > limit:
            raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _run_or_disconnect(run: Awaitable[Result], receive: Receive) -> Result | None:
    """``run``'s result, or None if the client disconnected first (``run`` is then
    cancelled). Raises what ``run`` raises.

    ``run`` is awaited in this task; a watcher task cancels this task if the client goes
    away (one task per request, no ``asyncio.wait``: the hot path of every infer)."""
    current = asyncio.current_task()
    assert current is not None
    gone = over = False

    def disconnected(watch: asyncio.Future[None]) -> None:
        # ``over``: a callback already scheduled when ``run`` ended must not cancel the task
        # afterwards (remove_done_callback cannot take back a scheduled one).
        nonlocal gone
        if not over and not watch.cancelled() and watch.exception() is None:
            gone = True
            current.cancel()

    watch = asyncio.ensure_future(_wait_disconnect(receive))
    watch.add_done_callback(disconnected)
    try:
        return await run
    except asyncio.CancelledError:
        if gone and current.uncancel() == 0:
            return None  # the cancel was ours: the client went away
        raise  # cancelled from outside (a drain past its timeout)
    finally:
        over = True
        watch.remove_done_callback(disconnected)
        watch.cancel()


def _deadline(request: Request, parsed: float | None, default: float | None) -> float | None:
    """The request's deadline in seconds: the smallest of ``parameters.timeout``, the
    Corral-Timeout header and the gateway's ``default_timeout``."""
    candidates = [t for t in (parsed, default) if t is not None]
    header = request.headers.get(TIMEOUT_HEADER)
    if header is not None:
        try:
            value = float(header)
        except ValueError:
            value = -1.0
        if not value > 0 or value == float("inf"):
            raise BadRequest("header Corral-Timeout", "a number of seconds > 0", header)
        candidates.append(value)
    return min(candidates) if candidates else None


def build_app(
    table: ModelTable,
    options: GatewayOptions,
    *,
    repository_on: bool,
    dashboard: Dashboard | None = None,
    metrics: Metrics | None = None,
) -> Starlette:
    """The ASGI app for ``table``'s models under ``options``, with ``dashboard``'s routes
    when given, and ``/metrics`` (``metrics``'s scrape) when ``metrics`` is given."""
    limit = options.max_body_bytes
    depth = options.max_json_depth

    def handled(endpoint: _Endpoint) -> _Endpoint:
        async def wrapper(request: Request) -> Response:
            try:
                return await endpoint(request)
            except HttpProblem as problem:
                return _problem(problem)
            except Exception:
                logger.exception("gateway: %s %s failed", request.method, request.url.path)
                return _json(500, {"error": "internal error in the gateway; see its log"})

        return wrapper

    def model_of(request: Request) -> Model:
        model = table.get(request.path_params["name"])
        model.check_version(request.path_params.get("version"))
        return model

    async def server_metadata(request: Request) -> Response:
        extensions = ["binary_tensor_data"] + (["model_repository"] if repository_on else [])
        return _json(200, {"name": "corral", "version": __version__, "extensions": extensions})

    async def live(request: Request) -> Response:
        return _json(200, {"live": True})

    async def ready(request: Request) -> Response:
        reason = table.readiness()
        if reason is None:
            return _json(200, {"ready": True})
        return _json(400, {"ready": False, "error": reason})

    async def model_metadata(request: Request) -> Response:
        return _json(200, model_of(request).metadata())

    async def model_ready(request: Request) -> Response:
        reason = model_of(request).readiness()
        if reason is None:
            return _json(200, {"name": request.path_params["name"], "ready": True})
        return _json(400, {"name": request.path_params["name"], "ready": False, "error": reason})

    async def infer(request: Request) -> Response:
        model = model_of(request)
        if not model.loaded:
            raise HttpProblem(
                503,
                f"model '{model.name}' is unloaded; POST /v2/repository/models/{model.name}/load "
                "serves it again",
                {"Retry-After": str(options.retry_after)},
            )
        body = await read_body(request, limit)
        parsed = parse_infer(
            body, request.headers.get("inference-header-content-length"), max_depth=depth
        )
        deadline = _deadline(request, parsed.timeout, options.default_timeout)
        serving = model.serving
        try:
            result = await _run_or_disconnect(
                serving.run_batch(parsed.array, deadline=deadline), request.receive
            )
        except Exception as exc:
            problem = problem_for(
                exc,
                model.name,
                overload_status=options.overload_status,
                retry_after=options.retry_after,
            )
            if problem.status == 500:
                logger.warning("gateway: model '%s' failed a request: %r", model.name, exc)
            raise problem from None
        if result is None:
            return Response(status_code=499)  # nobody is listening: the client went away
        try:
            payload, header_length = infer_response(
                model.name, result.version, parsed, result.output
            )
        except TypeError as exc:
            raise HttpProblem(500, f"model '{model.name}': {exc}") from None
        model.saw_output(result.output)
        if header_length is None:
            return Response(payload, 200, media_type="application/json")
        return Response(
            payload,
            200,
            headers={"Inference-Header-Content-Length": str(header_length)},
            media_type="application/octet-stream",
        )

    def admin(endpoint: _Endpoint) -> _Endpoint:
        token = (options.admin_token or "").encode()

        async def guarded(request: Request) -> Response:
            given = request.headers.get("authorization", "")
            scheme, _, credential = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(credential.encode(), token):
                raise HttpProblem(
                    401,
                    "the repository endpoints need the header Authorization: Bearer <admin token>",
                    {"WWW-Authenticate": 'Bearer realm="corral"'},
                )
            return await endpoint(request)

        return guarded

    async def repository_body(request: Request) -> dict[str, object]:
        body = await read_body(request, limit)
        if not body.strip():
            return {}
        doc = parse_json(body, max_depth=depth)
        if not isinstance(doc, dict):
            raise BadRequest("the body", "a JSON object", doc)
        parameters = doc.get("parameters", {})
        if not isinstance(parameters, dict):
            raise BadRequest("parameters", "an object", parameters)
        return parameters

    async def load(request: Request) -> Response:
        model = table.get(request.path_params["name"])
        parameters = await repository_body(request)
        for key in parameters:
            if key != "version":
                raise BadRequest(
                    f"parameters.{key}",
                    "absent: a load names only a version the operator declared (parameters."
                    "version); models, files and import paths are never taken from a request",
                )
        version = parameters.get("version")
        if version is not None and (type(version) is not str or not version):
            raise BadRequest("parameters.version", "a non-empty str", version)
        served = await model.load(version)
        return _json(200, {"name": model.name, "version": served, "state": "READY"})

    async def unload(request: Request) -> Response:
        model = table.get(request.path_params["name"])
        await repository_body(request)
        model.unload()
        return _json(200, {"name": model.name, "state": "UNAVAILABLE"})

    async def index(request: Request) -> Response:
        await repository_body(request)
        rows = [
            {
                "name": m.name,
                "version": m.serving.version,
                "state": "READY" if m.readiness() is None else "UNAVAILABLE",
                "versions": sorted(m.versions),
            }
            for m in table.models.values()
        ]
        return _json(200, rows)

    schema = json.dumps(openapi_schema(repository_on=repository_on)).encode()

    async def openapi(request: Request) -> Response:
        return Response(schema, 200, media_type="application/json")

    routes = [
        Route("/v2", handled(server_metadata), methods=["GET"]),
        Route("/v2/health/live", handled(live), methods=["GET"]),
        Route("/v2/health/ready", handled(ready), methods=["GET"]),
        Route("/openapi.json", handled(openapi), methods=["GET"]),
    ]
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [
            Route(base, handled(model_metadata), methods=["GET"]),
            Route(base + "/ready", handled(model_ready), methods=["GET"]),
            Route(base + "/infer", handled(infer), methods=["POST"]),
        ]
    if repository_on:
        routes += [
            Route("/v2/repository/index", handled(admin(index)), methods=["POST"]),
            Route("/v2/repository/models/{name}/load", handled(admin(load)), methods=["POST"]),
            Route("/v2/repository/models/{name}/unload", handled(admin(unload)), methods=["POST"]),
        ]

    if dashboard is not None:
        routes += _dashboard_routes(dashboard, options.admin_token, handled)
    if metrics is not None:
        scrape = _metrics_endpoint(metrics, options.admin_token)
        routes.append(Route("/metrics", handled(scrape), methods=["GET"]))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            message = f"no endpoint {request.url.path}; see /openapi.json"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = exc.detail
        return _json(exc.status_code, {"error": message}, exc.headers)

    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})


def _dashboard_routes(
    dashboard: Dashboard, token: str | None, handled: Callable[[_Endpoint], _Endpoint]
) -> list[Route]:
    """``/dashboard`` (the page), ``/dashboard/events`` (its snapshots, server-sent events)
    and ``/dashboard/static/{file}``; the first two need ``token`` when there is one."""

    def guarded(endpoint: _Endpoint) -> _Endpoint:
        async def check(request: Request) -> Response:
            check_token(
                token,
                request.headers.get("authorization", ""),
                request.query_params.get("token", ""),
            )
            return await endpoint(request)

        return check

    page = static_file("dashboard.html")

    async def index(request: Request) -> Response:
        return Response(page, 200, headers=HEADERS, media_type="text/html")

    async def static(request: Request) -> Response:
        name = request.path_params["file"]
        if name not in STATIC:
            raise HttpProblem(404, f"no dashboard file {name}")
        return Response(static_file(name), 200, headers=HEADERS, media_type=STATIC[name])

    async def events(request: Request) -> Response:
        if dashboard.node is None:
            raise HttpProblem(503, "the dashboard's gateway is not running")
        headers = {**HEADERS, "X-Accel-Buffering": "no"}
        return StreamingResponse(
            dashboard.events(), 200, headers=headers, media_type="text/event-stream"
        )

    return [
        Route("/dashboard", handled(guarded(index)), methods=["GET"]),
        Route("/dashboard/events", handled(guarded(events)), methods=["GET"]),
        Route("/dashboard/static/{file}", handled(static), methods=["GET"]),
    ]


def _metrics_endpoint(metrics: Metrics, token: str | None) -> _Endpoint:
    """``/metrics``: ``metrics`` in Prometheus's text format. With ``token``, only for the
    header ``Authorization: Bearer <token>`` (what a Prometheus scrape config sends)."""
    expected = (token or "").encode()

    async def scrape(request: Request) -> Response:
        if token is not None:
            given = request.headers.get("authorization", "")
            scheme, _, credential = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(credential.encode(), expected):
                raise HttpProblem(
                    401,
                    "/metrics needs the admin token: the header Authorization: Bearer <token>",
                    {"WWW-Authenticate": 'Bearer realm="corral"'},
                )
        # On the node's loop, like the servings it reads: no thread hop.
        return Response(metrics.exposition(), 200, media_type=CONTENT_TYPE)

    return scrape
