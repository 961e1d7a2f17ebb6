"""`corral serve` as a real process: one serving from flags, several from an app file,
logs on stderr, and a SIGTERM that drains the requests in flight (all answered, exit 0)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from gateway_helpers import HERE, infer_body


class Served:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for(self, pattern: str, within: float = 30.0) -> re.Match[str]:
        end = time.monotonic() + within
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no log line like {pattern!r}; log: {self.log}") from None
            self.log.append(line)
            found = re.search(pattern, line)
            if found:
                return found

    def drain_log(self) -> str:
        while not self.lines.empty():
            self.log.append(self.lines.get())
        return "".join(self.log)


@contextmanager
def serve(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[Served, str]]:
    path = os.environ.get("PYTHONPATH", "")
    full_env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{path}", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral.cli", "serve", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=full_env,
    )
    served = Served(proc)
    try:
        port = served.wait_for(r"listening on http://127\.0\.0\.1:(\d+)").group(1)
        yield served, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        served.reader.join(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()


def test_serve_runs_one_serving_from_flags_and_a_sigterm_stops_it_with_status_0() -> None:
    args = ["gateway_models:double", "--name", "double", "--http", "127.0.0.1:0"]
    with serve(*args, "--input-spec", "2:float32", "--batch-timeout", "0.001") as (served, url):
        r = httpx.post(f"{url}/v2/models/double/infer", json=infer_body([[1, 2]]))
        assert r.json()["outputs"][0]["data"] == [2.0, 4.0]
        meta = httpx.get(f"{url}/v2/models/double").json()
        assert meta["inputs"][0]["shape"] == [-1, 2]
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(timeout=30) == 0
        log = served.drain_log()
        assert "INFO corral.gateway: corral gateway listening on" in log
        assert "SIGTERM received; stopping" in log


def test_serve_with_log_format_json_writes_one_json_object_per_stderr_line() -> None:
    args = ["gateway_models:double", "--name", "double", "--http", "127.0.0.1:0"]
    with serve(*args, "--log-format", "json", "--log-level", "debug") as (served, _):
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(timeout=30) == 0
        served.reader.join(timeout=10)  # every line read, up to the end of stderr
        records = [json.loads(line) for line in served.drain_log().splitlines()]
    listening = next(r for r in records if "listening on" in r["message"])
    assert (listening["level"], listening["logger"]) == ("INFO", "corral.gateway")
    assert set(listening) == {"time", "level", "logger", "message"}
    assert any(r["message"].endswith("SIGTERM received; stopping") for r in records)


def test_sigterm_drains_requests_in_flight_then_exits_0(tmp_path: Path) -> None:
    args = ["gateway_models:file_gated", "--name", "gated", "--http", "127.0.0.1:0"]
    args += ["--partitions", "4", "--batch-size", "1", "--batch-timeout", "0"]
    env = {"GATEWAY_DIR": str(tmp_path)}
    with serve(*args, env=env) as (served, url), concurrent.futures.ThreadPoolExecutor(4) as pool:
        port = int(url.rsplit(":", 1)[1])
        calls = [
            pool.submit(
                httpx.post, f"{url}/v2/models/gated/infer", json=infer_body([[i]]), timeout=30
            )
            for i in range(4)
        ]
        entered = tmp_path / "entered"
        end = time.monotonic() + 20
        while not (entered.exists() and len(entered.read_text().split()) == 4):
            assert time.monotonic() < end, "the 4 requests never reached the model"
            time.sleep(0.01)
        served.proc.send_signal(signal.SIGTERM)
        served.wait_for("corral gateway draining")
        # New connections are refused while the 4 requests are still held.
        end = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except ConnectionRefusedError:
                break
            assert time.monotonic() < end, "still accepting connections while draining"
            time.sleep(0.01)
        assert not any(c.done() for c in calls)
        (tmp_path / "release").touch()
        answers = [c.result(timeout=30) for c in calls]
        assert [a.status_code for a in answers] == [200] * 4
        assert sorted(a.json()["outputs"][0]["data"][0] for a in answers) == [0, 2, 4, 6]
        assert served.proc.wait(timeout=30) == 0


def test_an_app_file_serves_several_models_with_declared_versions(tmp_path: Path) -> None:
    app = tmp_path / "app.toml"
    app.write_text(
        """
[gateway]
http = "127.0.0.1:0"
max_body_bytes = 100000

[[serving]]
name = "double"
factory = "gateway_models:double"
versions = { "2" = "gateway_models:triple" }
[serving.options]
batch_timeout = 0.001
input_spec = { shape = [2], dtype = "float32" }

[[serving]]
name = "triple"
factory = "gateway_models:triple"
"""
    )
    token = "t" * 32
    env = {"CORRAL_TOKEN": token}
    with serve("--app", str(app), "--admin-token-env", "CORRAL_TOKEN", env=env) as (served, url):
        body = infer_body([[1, 2]])
        r = httpx.post(f"{url}/v2/models/triple/infer", json=body)
        assert r.json()["outputs"][0]["data"] == [3.0, 6.0]
        auth = {"Authorization": f"Bearer {token}"}
        r = httpx.post(
            f"{url}/v2/repository/models/double/load",
            json={"parameters": {"version": "2"}},
            headers=auth,
            timeout=30,
        )
        assert r.json() == {"name": "double", "version": "2", "state": "READY"}
        r = httpx.post(f"{url}/v2/models/double/infer", json=body)
        assert (r.json()["model_version"], r.json()["outputs"][0]["data"]) == ("2", [3.0, 6.0])
        r = httpx.post(f"{url}/v2/models/double/infer", content=b"x" * 200_000)
        assert r.status_code == 413
        served.proc.send_signal(signal.SIGINT)
        assert served.proc.wait(timeout=30) == 0


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["gateway_models:double", "--batch-size", "0"], "batch_size must be an int >= 1; got 0"),
        (["gateway_models:double", "--http", "nowhere"], "expected HOST:PORT"),
        ([], "give a factory (module:attr) or --app FILE"),
    ],
)
def test_a_bad_command_line_is_exit_status_2_naming_the_problem(
    args: list[str], error: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "corral.cli", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert error in proc.stderr


def test_serve_help_documents_every_serving_and_gateway_option() -> None:
    from corral.gateway.cli import build_parser

    text = build_parser().format_help()
    for flag in ("--batch-size", "--max-queue", "--kind", "--input-spec", "--port-option"):
        assert flag in text
    for flag in ("--max-body-bytes", "--default-timeout", "--overload-status", "--drain-timeout"):
        assert flag in text
    assert "Most samples in one batch" in text
