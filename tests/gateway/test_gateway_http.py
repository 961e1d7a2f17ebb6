"""The gateway over real sockets: the v2 endpoints, every status code provoked for real,
binary tensors, disconnects, limits and truthful readiness (real time, free ports)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from gateway_helpers import Gated, infer_body, port_env, tensor, until

from corral import Node
from corral.gateway import Gateway
from corral.port import Port
from corral.serving import Serving

pytestmark = pytest.mark.realtime


@asynccontextmanager
async def running(
    *servings: Serving, **options: object
) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient]]:
    gateway = Gateway(list(servings), port=0, **options)
    async with Node([*(s.child_spec() for s in servings), gateway.child_spec()]):
        url = f"http://127.0.0.1:{gateway.port}"
        async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:
            yield gateway, client


def doubling(name: str = "double", **options: object) -> Serving:
    return Serving("gateway_models:double", name=name, input_spec=((2,), "float32"), **options)


async def test_metadata_health_and_json_infer_follow_the_v2_protocol() -> None:
    async with running(doubling(), doubling("other")) as (gateway, client):
        assert gateway.port != 0
        server = (await client.get("/v2")).json()
        assert server["name"] == "corral" and server["extensions"] == ["binary_tensor_data"]
        assert (await client.get("/v2/health/live")).json() == {"live": True}
        ready = await client.get("/v2/health/ready")
        assert (ready.status_code, ready.json()) == (200, {"ready": True})
        meta = (await client.get("/v2/models/double")).json()
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 2]}]
        assert meta["versions"] == ["1"]
        assert (await client.get("/v2/models/other/versions/1/ready")).json() == {
            "name": "other",
            "ready": True,
        }
        r = await client.post(
            "/v2/models/double/infer", json=infer_body([[1, 2], [3, 4.5]], id="req-7")
        )
        assert r.status_code == 200
        assert r.json() == {
            "model_name": "double",
            "model_version": "1",
            "id": "req-7",
            "outputs": [
                {"name": "output", "datatype": "FP32", "shape": [2, 2], "data": [2, 4, 6, 9]}
            ],
        }
        # The version of the answer is addressable; flat data works as nested does.
        r = await client.post(
            "/v2/models/other/versions/1/infer",
            json={"inputs": [{"name": "a", "shape": [1, 2], "datatype": "INT16", "data": [1, 2]}]},
        )
        assert r.json()["outputs"][0]["data"] == [2.0, 4.0]
        meta = (await client.get("/v2/models/double")).json()
        assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 2]}]


async def test_binary_tensors_travel_both_ways_without_json_data() -> None:
    async with running(doubling()) as (_, client):
        x = np.arange(8, dtype=np.float32).reshape(4, 2)
        head = json.dumps(
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [4, 2],
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": x.nbytes},
                    }
                ],
                "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
            }
        ).encode()
        r = await client.post(
            "/v2/models/double/infer",
            content=head + x.tobytes(),
            headers={
                "Inference-Header-Content-Length": str(len(head)),
                "Content-Type": "application/octet-stream",
            },
        )
        assert r.status_code == 200
        n = int(r.headers["inference-header-content-length"])
        doc = json.loads(r.content[:n])
        (out,) = doc["outputs"]
        assert out == {
            "name": "output",
            "datatype": "FP32",
            "shape": [4, 2],
            "parameters": {"binary_data_size": 32},
        }
        got = np.frombuffer(r.content[n:], "<f4").reshape(4, 2)
        np.testing.assert_array_equal(got, x * 2)
        # binary_data_output on the request asks for the same without naming outputs.
        r = await client.post(
            "/v2/models/double/infer",
            json=infer_body([[1, 1]], parameters={"binary_data_output": True}),
        )
        n = int(r.headers["inference-header-content-length"])
        assert np.frombuffer(r.content[n:], "<f4").tolist() == [2.0, 2.0]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            {"inputs": []},
            "inputs must be a list of exactly one tensor (a serving takes one); got 0",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "STR", "data": [1, 2]}]},
            "inputs[0].datatype must be one of BOOL, UINT8, UINT16, UINT32, UINT64, INT8, "
            "INT16, INT32, INT64, FP16, FP32, FP64, BYTES; got 'STR'",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1]}]},
            "inputs[0].data must be 2 values for shape [1, 2]; got '1 values'",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "INT8", "data": [1, 1.5]}]},
            "inputs[0].data must be integers for datatype INT8",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "UINT8", "data": [1, 300]}]},
            "inputs[0].data must be integers from 0 to 255 for UINT8",
        ),
        (
            infer_body([[1, 2, 3]]),
            "inputs[0] must be shape (n, *(2,)) and dtype float32; got shape (1, 3) and dtype "
            "float32",
        ),
        (
            infer_body([[1, 2]], outputs=[{"name": "logits"}]),
            "outputs[0].name must be 'output' (the one output); got 'logits'",
        ),
        (
            infer_body([[1, 2]], parameters={"timeout": "soon"}),
            "parameters.timeout must be a number of microseconds > 0; got 'soon'",
        ),
        ([1, 2], "the body must be a JSON object with inputs; got [1, 2]"),
    ],
)
async def test_a_request_that_breaks_a_rule_is_400_naming_the_field_and_the_rule(
    body: object, error: str
) -> None:
    async with running(doubling()) as (_, client):
        r = await client.post("/v2/models/double/infer", json=body)
        assert (r.status_code, r.json()) == (400, {"error": error})


async def test_malformed_and_too_deep_json_is_400_without_parsing_it_deeply() -> None:
    async with running(doubling(), max_json_depth=8) as (_, client):
        r = await client.post("/v2/models/double/infer", content=b'{"inputs": [')
        assert r.status_code == 400 and r.json()["error"].startswith("the body must be valid JSON")
        deep = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        r = await client.post("/v2/models/double/infer", content=deep)
        assert r.json() == {
            "error": "the body must be JSON nested at most 8 deep; got 'depth 100001'"
        }
        # Brackets inside strings do not count.
        r = await client.post(
            "/v2/models/double/infer", json=infer_body([[1, 2]], id="[[[[[[[[[[[[[[[[")
        )
        assert r.status_code == 200


async def test_unknown_model_version_or_endpoint_is_404_and_a_wrong_method_405() -> None:
    async with running(doubling()) as (_, client):
        for path in ("/v2/models/nope", "/v2/models/nope/ready", "/v2/models/double/versions/2"):
            r = await client.get(path)
            assert r.status_code == 404, path
        r = await client.post("/v2/models/double/versions/2/infer", json=infer_body([[1, 2]]))
        assert r.json() == {
            "error": "model 'double' has no version '2' being served; it serves version '1' "
            "(a version being retired by a swap is not addressable)"
        }
        assert (await client.get("/v3")).json() == {"error": "no endpoint /v3; see /openapi.json"}
        # Without a token the repository endpoints do not exist at all.
        assert (await client.post("/v2/repository/models/double/load")).status_code == 404
        r = await client.get("/v2/models/double/infer")
        assert r.status_code == 405
        assert r.json() == {"error": "GET is not allowed on /v2/models/double/infer"}


@pytest.mark.parametrize("status", [503, 429])
async def test_a_full_queue_is_503_with_retry_after_or_429_when_configured(status: int) -> None:
    model = Gated()
    s = Serving(model, name="slow", batch_size=1, max_queue=1, batch_timeout=0.0)
    async with running(s, overload_status=status, retry_after=3) as (_, client):
        first = asyncio.ensure_future(
            client.post("/v2/models/slow/infer", json=infer_body([[1.0]]))
        )
        await model.gate.wait_blocked(1)
        queued = asyncio.ensure_future(
            client.post("/v2/models/slow/infer", json=infer_body([[2.0]]))
        )
        await until(lambda: s.statistics().queue_length == 1, what="second request queued")
        r = await client.post("/v2/models/slow/infer", json=infer_body([[3.0]]))
        assert r.status_code == status
        assert r.headers["retry-after"] == "3"
        assert r.json() == {
            "error": "serving 'slow' is overloaded: 1 requests queued (max_queue=1)"
        }
        model.gate.open()
        assert [(await f).status_code for f in (first, queued)] == [200, 200]
        assert s.statistics().overloaded == 1


async def test_a_deadline_from_parameters_header_or_default_is_504_at_the_deadline() -> None:
    model = Gated()
    s = Serving(model, name="held", batch_size=1, batch_timeout=0.0)
    async with running(s, default_timeout=0.2) as (_, client):
        loop = asyncio.get_running_loop()
        cases = [
            ({"parameters": {"timeout": 50_000}}, {}),  # 50 ms in microseconds, as Triton
            ({}, {"Corral-Timeout": "0.05"}),
            ({}, {}),  # the gateway's default_timeout, 0.2 s
        ]
        for extra, headers in cases:
            began = loop.time()
            r = await client.post(
                "/v2/models/held/infer", json=infer_body([[1.0]], **extra), headers=headers
            )
            took = loop.time() - began
            assert r.status_code == 504, r.text
            assert "deadline" in r.json()["error"]
            assert took < 2.0
        r = await client.post(
            "/v2/models/held/infer", json=infer_body([[1.0]]), headers={"Corral-Timeout": "-1"}
        )
        assert r.json() == {
            "error": "header Corral-Timeout must be a number of seconds > 0; got '-1'"
        }
        model.gate.open()
        assert s.statistics().expired + s.statistics().failed >= 3


async def test_a_model_error_is_500_with_its_message_and_no_traceback_or_path() -> None:
    s = Serving("gateway_models:failing", name="picky")
    async with running(s) as (_, client):
        r = await client.post("/v2/models/picky/infer", json=infer_body([[-1.0]]))
        assert (r.status_code, r.json()) == (
            500,
            {"error": "model 'picky' failed: ValueError: negative input refused by <path>"},
        )
        assert "Traceback" not in r.text
        r = await client.post("/v2/models/picky/infer", json=infer_body([[1.0]]))
        assert r.status_code == 200


async def test_a_client_that_disconnects_cancels_its_queued_request() -> None:
    model = Gated()
    s = Serving(model, name="held", batch_size=1, batch_timeout=0.0)
    async with running(s) as (gateway, client):
        first = asyncio.ensure_future(
            client.post("/v2/models/held/infer", json=infer_body([[1.0]]))
        )
        await model.gate.wait_blocked(1)
        body = json.dumps(infer_body([[2.0]])).encode()
        _, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(
            b"POST /v2/models/held/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        await until(lambda: s.statistics().queue_length == 1, what="request queued")
        writer.close()
        await writer.wait_closed()
        await until(lambda: s.statistics().cancelled == 1, within=2.0, what="request cancelled")
        assert s.statistics().queue_length == 0
        model.gate.open()
        assert (await first).status_code == 200
        assert model.gate.entered == 1  # the cancelled request never ran


async def _status_line(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n")


async def test_a_100_mb_body_is_413_before_it_is_read() -> None:
    async with running(doubling(), max_body_bytes=1 << 20) as (gateway, _):
        # Declared by Content-Length: refused before one byte of the body is read.
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(
            b"POST /v2/models/double/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n"
        )
        await writer.drain()
        assert await _status_line(reader) == b"HTTP/1.1 413 Request Entity Too Large\r\n"
        writer.close()
        # Chunked, with no length: refused once 1 MiB has streamed in, not after 100 MB.
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(
            b"POST /v2/models/double/infer HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        answer = asyncio.ensure_future(_status_line(reader))
        chunk = b"%x\r\n" % (256 << 10) + b" " * (256 << 10) + b"\r\n"
        sent = 0
        try:
            while not answer.done() and sent < 100_000_000:
                writer.write(chunk)
                await writer.drain()
                sent += 256 << 10
                await asyncio.sleep(0)
        except ConnectionError:
            pass
        assert await answer == b"HTTP/1.1 413 Request Entity Too Large\r\n"
        assert sent < 100_000_000
        writer.close()


async def test_readiness_is_false_within_a_second_of_killing_every_worker(
    tmp_path: Path,
) -> None:
    hold = tmp_path / "hold"
    s = Serving(
        "gateway_models:held_load",
        name="ported",
        kind="port",
        partitions=2,
        port_options={"spares": 0, "env": port_env(GATEWAY_HOLD=str(hold))},
    )
    async with running(s) as (_, client):
        assert (await client.get("/v2/health/ready")).status_code == 200
        hold.touch()  # restarted workers wait before loading the model
        for pid in s.partition_pids():
            os_pid = Port.os_pid_of(pid)
            assert os_pid is not None
            os.kill(os_pid, signal.SIGKILL)
        statuses: list[int] = []

        async def look() -> bool:
            r = await client.get("/v2/health/ready")
            statuses.append(r.status_code)
            return r.status_code == 400

        loop = asyncio.get_running_loop()
        began = loop.time()
        while not await look():
            assert loop.time() - began < 1.0, statuses
        r = await client.get("/v2/models/ported/ready")
        assert r.json() == {
            "name": "ported",
            "ready": False,
            "error": "model 'ported': every partition of version '1' is down",
        }
        hold.unlink()
        while (await client.get("/v2/health/ready")).status_code != 200:
            assert loop.time() - began < 20.0
            await asyncio.sleep(0.01)
        r = await client.post("/v2/models/ported/infer", json=infer_body([[1.0]]))
        assert r.json()["outputs"][0]["data"] == [2.0]


async def test_a_stopped_serving_is_not_ready_and_its_requests_are_503() -> None:
    s = doubling()
    gateway = Gateway([s], port=0)
    async with Node([gateway.child_spec()]), httpx.AsyncClient() as client:
        url = f"http://127.0.0.1:{gateway.port}"  # the serving never started
        r = await client.get(url + "/v2/health/ready")
        assert r.status_code == 400 and r.json()["ready"] is False
        r = await client.post(url + "/v2/models/double/infer", json=infer_body([[1, 2]]))
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"].startswith("serving 'double' is not running")


async def test_curl_speaks_to_the_gateway_with_json_and_binary_tensors(tmp_path: Path) -> None:
    curl = shutil.which("curl")
    if curl is None:
        if os.environ.get("CI") == "true":
            pytest.fail("curl is missing (scripts/debian-packages.txt lists it)")
        pytest.skip("curl is not installed")
    async with running(doubling()) as (gateway, _):
        url = f"http://127.0.0.1:{gateway.port}/v2/models/double/infer"

        async def curl_run(*args: str) -> bytes:
            proc = await asyncio.create_subprocess_exec(
                curl, "-sS", *args, stdout=asyncio.subprocess.PIPE
            )
            out, _ = await proc.communicate()
            assert proc.returncode == 0
            return out

        body = json.dumps(infer_body([[1, 2]]))
        out = await curl_run("-H", "Content-Type: application/json", "-d", body, url)
        assert json.loads(out)["outputs"][0]["data"] == [2.0, 4.0]
        head = (
            json.dumps(
                {
                    "inputs": [
                        {**tensor([[1, 2]]), "parameters": {"binary_data_size": 8}, "data": None}
                    ],
                    "parameters": {"binary_data_output": True},
                }
            )
            .replace(', "data": null', "")
            .encode()
        )
        (tmp_path / "body").write_bytes(head + np.array([1, 2], "<f4").tobytes())
        out = await curl_run(
            "-H",
            f"Inference-Header-Content-Length: {len(head)}",
            "--data-binary",
            f"@{tmp_path / 'body'}",
            "-D",
            str(tmp_path / "headers"),
            url,
        )
        headers = (tmp_path / "headers").read_text().lower()
        n = int(headers.split("inference-header-content-length: ")[1].split()[0])
        assert np.frombuffer(out[n:], "<f4").tolist() == [2.0, 4.0]
