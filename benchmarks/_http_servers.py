"""The servers benchmarks/gateway.py measures, one per OS process:

    python benchmarks/_http_servers.py ceiling|per_request|corral [--kind thread|loop|port]
                                       [--loop uvloop|asyncio]

``ceiling``
    A bare Starlette app on uvicorn that reads each request's body and answers a constant
    v2 response without parsing it: the HTTP ceiling (what uvicorn, Starlette and the loop
    cost per request, and nothing else).
``per_request``
    The same app, which parses the v2 request, runs the tiny MLP on its one sample inline
    on the loop and answers its output: per-request inference without batching
    (LitServe-style). Inline is the fastest way to serve a model this small (tens of
    microseconds a sample) unbatched; a thread hop per request would only add to it.
``corral``
    ``corral.gateway.Gateway`` in front of a ``Serving`` of the tiny MLP (``batch_size=64``,
    ``batch_timeout=0.002``, one partition of ``--kind``), in one ``Node``.

Each binds a free loopback port and prints ``{"port": N, ...}`` as its first stdout line once
it is accepting connections. Then it reads commands from stdin, one a line: ``stats`` prints
one JSON line (``cpu_s``, the CPU time of the process and of its port workers; for
``corral``, the serving's ``batches`` and ``samples`` so far); ``stop``, or the end of stdin,
stops the server and exits 0. The benchmark owns the process: it does not outlive its stdin.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy is imported

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np

from _common import LOOPS, loop_factory
from _serving_models import tiny_mlp

MODEL = "tiny"
"""The model's name in every server's URLs: ``/v2/models/tiny/infer``."""

APPS = ("ceiling", "per_request", "corral")
KINDS = ("thread", "loop", "port")


def free_socket() -> socket.socket:
    """A listening TCP socket on a free loopback port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def v2_response(y: np.ndarray) -> dict[str, Any]:
    return {
        "model_name": MODEL,
        "outputs": [
            {
                "name": "output0",
                "shape": list(y.shape),
                "datatype": "FP32",
                "data": y.ravel().tolist(),
            }
        ],
    }


def starlette_app(kind: str) -> Any:
    """The ``ceiling`` or ``per_request`` app: health, readiness and infer routes."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    model = tiny_mlp()
    constant = json.dumps(v2_response(np.zeros((1, 10), np.float32))).encode()

    async def ready(_: Request) -> Response:
        return Response()

    async def constant_infer(request: Request) -> Response:
        await request.body()
        return Response(constant, media_type="application/json")

    async def model_infer(request: Request) -> Response:
        tensor = json.loads(await request.body())["inputs"][0]
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        return JSONResponse(v2_response(model(x)))

    infer = constant_infer if kind == "ceiling" else model_infer
    return Starlette(
        routes=[
            Route("/v2/health/ready", ready),
            Route(f"/v2/models/{MODEL}/infer", infer, methods=["POST"]),
        ]
    )


async def commands(handle: Callable[[str], dict[str, object]]) -> None:
    """Answer ``stats`` lines on stdin until ``stop`` or the end of stdin."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        if line == "stop":
            return
        answer = handle(line) if line == "stats" else {"error": f"unknown command {line!r}"}
        print(json.dumps(answer), flush=True)


@contextlib.asynccontextmanager
async def uvicorn_server(app: Any) -> AsyncIterator[int]:
    """``app`` on uvicorn in this loop, on a free loopback port; yields the port."""
    import uvicorn

    sock = free_socket()
    config = uvicorn.Config(app, lifespan="off", access_log=False, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                await task  # its error, or SystemExit from a failed startup
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        sock.close()


def http_impl() -> str:
    """The HTTP implementation uvicorn's ``http="auto"`` picks here."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


def cpu_stats() -> dict[str, object]:
    return {"cpu_s": time.process_time()}


def process_cpu(pid: int) -> float:
    """CPU seconds (user and system) process ``pid`` has run, from /proc; 0 where there is
    no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def serve_baseline(kind: str, loop: str) -> None:
    async with uvicorn_server(starlette_app(kind)) as port:
        print(json.dumps({"port": port, "http": http_impl(), "loop": loop}), flush=True)
        await commands(lambda _: cpu_stats())


async def serve_corral(kind: str, loop: str) -> None:
    from _serving_load import BATCH, port_options
    from corral import Node
    from corral.gateway import Gateway
    from corral.serving import Serving

    serving = Serving(
        "_serving_models:tiny_mlp",
        name=MODEL,
        batch_size=BATCH,
        batch_timeout=0.002,
        max_queue=4096,
        kind=kind,  # type: ignore[arg-type]
        **({"port_options": port_options()} if kind == "port" else {}),
    )
    gateway = Gateway([serving], host="127.0.0.1", port=0)

    def stats(_: str) -> dict[str, object]:
        s = serving.statistics()
        samples = sum(size * count for size, count in s.batch_sizes)
        workers = sum(process_cpu(p.os_pid) for p in s.partitions if p.os_pid is not None)
        return {
            "cpu_s": time.process_time() + workers,
            "batches": s.batches,
            "samples": samples,
            "failed": s.failed,
        }

    async with Node([serving.child_spec(), gateway.child_spec()]):
        for _ in range(1000):  # the gateway binds as it starts: 10 s at most
            if gateway.port:
                break
            await asyncio.sleep(0.01)
        else:
            raise RuntimeError("the gateway had no port 10 s after its node started")
        print(json.dumps({"port": gateway.port, "http": http_impl(), "loop": loop}), flush=True)
        await commands(stats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app", choices=APPS)
    parser.add_argument("--kind", choices=KINDS, default="thread")
    parser.add_argument("--loop", choices=LOOPS, default="asyncio")
    args = parser.parse_args()
    body = (
        serve_corral(args.kind, args.loop)
        if args.app == "corral"
        else serve_baseline(args.app, args.loop)
    )
    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        runner.run(body)


if __name__ == "__main__":
    main()
