"""benchmarks/gateway.py's load, servers' lifecycle, measurements and lines: see its
docstring."""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy is imported

import argparse
import asyncio
import contextlib
import http.client
import json
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from _common import Settings, emit, interleaved, median, parse_settings, say
from _serving_models import tiny_mlp

HERE = Path(__file__).resolve().parent

BENCH = "gateway"
CONNECTIONS = 64
"""Keep-alive connections wrk holds open, each with one request in flight."""
WRK_THREADS = 1
"""wrk's threads: one keeps up with these servers and leaves the other CPUs to them."""
START_TIMEOUT = 60.0
"""Seconds a server may take to print its port (imports, a port worker's start)."""
READY_TIMEOUT = 30.0
"""Seconds a server may take from its port to a ready ``/v2/health/ready``."""
STATS_TIMEOUT = 10.0
"""Seconds a server may take to answer a ``stats`` command."""
STOP_TIMEOUT = 10.0
"""Seconds a server may take to exit after ``stop`` before it is terminated, then killed."""
TARGET_CEILING = 0.7
"""Issue 14: the gateway's batched throughput against the HTTP ceiling."""
TARGET_PER_REQUEST = 10.0
"""Issue 14's stretch reference: against per-request inference."""
LITSERVE_REFERENCE = 785.0
"""req/s LitServe served the same load at on this machine (issue 14), for reference only."""
SERVERS = HERE / "_http_servers.py"
SCRIPT = HERE / "_http_infer.lua"
PATH = "/v2/models/tiny/infer"
KINDS = ("thread", "loop", "port")


def request_body() -> tuple[bytes, np.ndarray]:
    """The v2 infer request every connection sends, and the model's answer to it."""
    x = np.random.default_rng(2).standard_normal((1, 64)).astype(np.float32)
    tensor = {"name": "x", "shape": [1, 64], "datatype": "FP32", "data": x.ravel().tolist()}
    return json.dumps({"inputs": [tensor]}).encode(), tiny_mlp()(x)


def http_call(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    """One request on a fresh connection (1 s timeout): ``(status, body)``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@dataclass
class Server:
    """One server process of ``_http_servers``, driven through its stdin."""

    name: str
    args: list[str]
    loop: str
    proc: asyncio.subprocess.Process | None = None
    port: int = 0
    http: str = ""
    info: dict[str, object] = field(default_factory=dict)

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SERVERS),
            *self.args,
            "--loop",
            self.loop,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        line = await self.read_line(START_TIMEOUT, "print its port")
        self.info = json.loads(line)
        self.port, self.http = int(self.info["port"]), str(self.info["http"])  # type: ignore[call-overload]
        await self.wait_ready()

    async def read_line(self, timeout: float, what: str) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise RuntimeError(f"http: server {self.name} did not {what} in {timeout} s") from None
        if not line:
            status = await self.proc.wait()
            raise RuntimeError(f"http: server {self.name} exited with status {status}")
        return line

    async def wait_ready(self) -> None:
        """Poll ``/v2/health/ready`` until it answers 200, at most ``READY_TIMEOUT`` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        last = "no answer"
        while loop.time() < deadline:
            try:
                status, _ = await asyncio.to_thread(http_call, self.port, "GET", "/v2/health/ready")
            except OSError as exc:
                last = repr(exc)
            else:
                if status == 200:
                    return
                last = f"status {status}"
            await asyncio.sleep(0.05)
        raise RuntimeError(f"http: server {self.name} not ready in {READY_TIMEOUT} s ({last})")

    async def check_answer(self, body: bytes, expected: np.ndarray) -> None:
        """One infer request: 200, and (but for the ceiling) the model's output."""
        status, answer = await asyncio.to_thread(http_call, self.port, "POST", PATH, body)
        if status != 200:
            raise RuntimeError(f"http: server {self.name} answered {status}: {answer[:300]!r}")
        if self.name == "ceiling_constant_v2":
            return
        data = np.asarray(json.loads(answer)["outputs"][0]["data"], np.float32)
        if not np.allclose(data.ravel(), expected.ravel(), rtol=1e-4, atol=1e-5):
            raise RuntimeError(f"http: server {self.name} answered {data}, not {expected}")

    async def stats(self) -> dict[str, float]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(b"stats\n")
        await self.proc.stdin.drain()
        return json.loads(await self.read_line(STATS_TIMEOUT, "answer stats"))  # type: ignore[no-any-return]

    async def stop(self) -> None:
        """``stop``, then SIGTERM, then SIGKILL, each after ``STOP_TIMEOUT`` s."""
        if self.proc is None or self.proc.returncode is not None:
            return
        proc = self.proc
        with contextlib.suppress(OSError):  # it may have exited already
            assert proc.stdin is not None
            proc.stdin.write(b"stop\n")
            proc.stdin.close()
        for escalate in (proc.terminate, proc.kill):
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
                return
            except TimeoutError:
                say(f"http: {self.name} still running {STOP_TIMEOUT} s on; {escalate.__name__}")
                with contextlib.suppress(ProcessLookupError):
                    escalate()
        await proc.wait()


async def run_wrk(port: int, seconds: int, body_file: Path) -> dict[str, object]:
    """wrk against ``port`` for ``seconds``; its ``WRKJSON`` line."""
    proc = await asyncio.create_subprocess_exec(
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{CONNECTIONS}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(SCRIPT),
        f"http://127.0.0.1:{port}{PATH}",
        "--",
        str(body_file),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), seconds + 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"http: wrk ran {seconds + 30} s for a {seconds} s run") from None
    for line in out.decode().splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line.removeprefix("WRKJSON "))  # type: ignore[no-any-return]
    raise RuntimeError(
        f"http: wrk gave no WRKJSON line (status {proc.returncode}): {(out + err)[-2000:]!r}"
    )


async def measure(
    server: Server, seconds: int, body_file: Path, verbose: bool = False
) -> dict[str, float]:
    """One measured wrk run against ``server``, with its statistics around it."""
    before = await server.stats()
    wrk = await run_wrk(server.port, seconds, body_file)
    after = await server.stats()
    requests = float(wrk["requests"])  # type: ignore[arg-type]
    latency: dict[str, float] = wrk["latency_us"]  # type: ignore[assignment]
    errors: dict[str, float] = wrk["errors"]  # type: ignore[assignment]
    run = {
        "rate": requests / (float(wrk["duration_us"]) / 1e6),  # type: ignore[arg-type]
        "p50_ms": latency["p50"] / 1e3,
        "p99_ms": latency["p99"] / 1e3,
        "non2xx": float(wrk["non2xx"]),  # type: ignore[arg-type]
        "socket_errors": float(sum(errors.values())),
        "cpu_us": (after["cpu_s"] - before["cpu_s"]) / max(requests, 1) * 1e6,
    }
    if "batches" in after:
        batches = after["batches"] - before["batches"]
        run["mean_batch_size"] = (after["samples"] - before["samples"]) / max(batches, 1)
    if verbose:
        say(f"  {server.name}: " + ", ".join(f"{k} {v:,.4g}" for k, v in run.items()))
    return run


def summary(
    runs: Sequence[dict[str, float]], base: Sequence[dict[str, float]]
) -> dict[str, object]:
    """Medians of ``runs``, sums of their failures, and per-repeat ratios to ``base``."""
    ratios = [r["rate"] / b["rate"] for r, b in zip(runs, base, strict=True)]
    out: dict[str, object] = {
        "ratio": median(ratios),
        "ratios": [round(r, 4) for r in ratios],
        "p50_ms": median([r["p50_ms"] for r in runs]),
        "p99_ms": median([r["p99_ms"] for r in runs]),
        "non2xx": int(sum(r["non2xx"] for r in runs)),
        "socket_errors": int(sum(r["socket_errors"] for r in runs)),
        "server_cpu_us_per_req": median([r["cpu_us"] for r in runs]),
        "cpu_ratio": median([b["cpu_us"] / r["cpu_us"] for r, b in zip(runs, base, strict=True)]),
    }
    if "mean_batch_size" in runs[0]:
        out["mean_batch_size"] = median([r["mean_batch_size"] for r in runs])
    return out


def report(
    settings: Settings,
    case: str,
    runs: Sequence[dict[str, float]],
    base: Sequence[dict[str, float]],
    base_name: str,
    http: str,
    target: float | None = None,
    **extra: object,
) -> float:
    """Emit one line for ``runs`` against ``base`` (the same repeats): medians, and the
    median of the per-repeat ratios, which it returns; with ``target``, whether it is met."""
    s = summary(runs, base)
    ratio = float(s.pop("ratio"))  # type: ignore[arg-type]
    if target is not None:
        extra |= {"target": target, "target_met": ratio >= target}
    rate = median([r["rate"] for r in runs])
    emit(
        bench=BENCH,
        case=case,
        metric="throughput",
        value=rate,
        unit="req/s",
        baseline_name=base_name,
        baseline_value=median([b["rate"] for b in base]),
        loop=settings.loop,
        ratio=ratio,
        http=http,
        connections=CONNECTIONS,
        repeats=len(runs),
        **s,
        **extra,
    )
    verdict = (
        "" if target is None else f" (target >= {target}: {'met' if ratio >= target else 'MISSED'})"
    )
    say(f"{case}: {rate:,.0f} req/s, p99 {s['p99_ms']:.1f} ms, ratio {ratio:.3f}{verdict}")
    return ratio


CEILING = "bare Starlette on uvicorn answering a constant v2 response (the HTTP ceiling)"
PER_REQUEST = "the same app running the model per request, inline, unbatched"


def skip(case: str, reason: str) -> None:
    say(f"http: {case} skipped: {reason}")
    print(json.dumps({"bench": BENCH, "case": case, "skipped": reason}), flush=True)


def missing_requirement() -> str | None:
    """Why the baselines cannot run here, or None."""
    if shutil.which("wrk") is None:
        return "wrk not found (Debian package wrk; scripts/debian-packages.txt)"
    for module in ("starlette", "uvicorn"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install 'corral[http]')"
    return None


def gateway_missing() -> str | None:
    try:
        from corral.gateway import Gateway  # noqa: F401
    except ImportError as exc:
        return f"corral.gateway.Gateway cannot be imported ({exc})"
    return None


@contextlib.asynccontextmanager
async def servers(settings: Settings, kinds: Sequence[str]) -> AsyncIterator[dict[str, Server]]:
    """Start every server, one after the other (so that none starts on a loaded CPU);
    stop them all on the way out."""
    specs = {"ceiling_constant_v2": ["ceiling"], "per_request_inline": ["per_request"]}
    specs |= {f"gateway_{kind}": ["corral", "--kind", kind] for kind in kinds}
    started: dict[str, Server] = {}
    try:
        for name, args in specs.items():
            server = Server(name, args, settings.loop)
            started[name] = server
            await server.start()
        yield started
    finally:
        for server in reversed(started.values()):
            await server.stop()


async def main(settings: Settings, kinds: Sequence[str]) -> None:
    if (reason := missing_requirement()) is not None:
        skip("all", reason)
        return
    if kinds and (reason := gateway_missing()) is not None:
        for kind in kinds:
            skip(f"gateway_{kind}", reason)
        kinds = ()
    seconds = 2 if settings.quick else 5  # wrk takes whole seconds
    warmup = 1
    body, expected = request_body()
    with tempfile.TemporaryDirectory(prefix="corral-http-bench-") as tmp:
        body_file = Path(tmp) / "infer.json"
        body_file.write_bytes(body)
        async with servers(settings, kinds) as started:
            for server in started.values():
                await server.check_answer(body, expected)
                await run_wrk(server.port, warmup, body_file)
            names = list(started)
            sides = [
                lambda server=server: measure(server, seconds, body_file, settings.verbose)
                for server in started.values()
            ]
            runs = dict(zip(names, await interleaved(sides, settings.repeats), strict=True))
            http = started["ceiling_constant_v2"].http
    emit_all(settings, runs, http)


def emit_all(settings: Settings, runs: dict[str, list[dict[str, float]]], http: str) -> None:
    ceiling = runs["ceiling_constant_v2"]
    per_request = runs["per_request_inline"]
    report(settings, "ceiling_constant_v2", ceiling, ceiling, f"itself: {CEILING}", http)
    report(settings, "per_request_inline", per_request, ceiling, CEILING, http)
    gateways = {name: side for name, side in runs.items() if name.startswith("gateway_")}
    ratios: dict[str, float] = {}
    for name, side in gateways.items():
        vs = [r["rate"] / b["rate"] for r, b in zip(side, per_request, strict=True)]
        ratios[name] = report(
            settings, name, side, ceiling, CEILING, http, TARGET_CEILING, vs_per_request=median(vs)
        )
    if not ratios:
        return
    best = max(ratios, key=lambda name: ratios[name])
    report(
        settings,
        "gateway_best",
        gateways[best],
        ceiling,
        CEILING,
        http,
        TARGET_CEILING,
        configuration=best,
    )
    rate = median([r["rate"] for r in gateways[best]])
    report(
        settings,
        "gateway_best_vs_per_request",
        gateways[best],
        per_request,
        PER_REQUEST,
        http,
        TARGET_PER_REQUEST,
        configuration=best,
        litserve_reference=LITSERVE_REFERENCE,
        ratio_to_litserve_reference=rate / LITSERVE_REFERENCE,
    )


def parse_kinds(argv: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """Take ``--kinds a,b`` out of ``argv``; returns the partition kinds and the rest."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--kinds", default=",".join(KINDS))
    args, rest = parser.parse_known_args(argv)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    if not set(kinds) <= set(KINDS):
        parser.error(f"--kinds: comma-separated kinds of {', '.join(KINDS)}; got {args.kinds!r}")
    return kinds, rest


def run(description: str, argv: list[str]) -> None:
    """Parse ``argv`` and run the benchmark."""
    kinds, rest = parse_kinds(argv)
    settings = parse_settings(description, rest)
    asyncio.run(main(settings, kinds))
