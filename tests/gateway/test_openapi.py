"""/openapi.json describes the gateway, and the running gateway keeps to it: schemathesis
generates requests for every operation (a few hundred in all, bounded) and checks each
answer: never a 5xx, a documented status, a documented content type, a body matching its
schema."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from corral import Node
from corral.gateway import Gateway
from corral.serving import Serving

TOKEN = "fuzz-token-0123456789"


@pytest.fixture(scope="module")
def gateway_url() -> Iterator[str]:
    """A gateway with two models and the repository on, on a node in a thread of its own."""
    double = Serving("gateway_models:double", name="double", input_spec=((2,), "float32"))
    free = Serving("gateway_models:double", name="free")
    gateway = Gateway(
        [double, free],
        port=0,
        admin_token=TOKEN,
        repository={"double": {"2": "gateway_models:triple"}},
        max_body_bytes=1 << 16,
    )
    up = threading.Event()
    state: dict[str, object] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        state["stop"], state["loop"] = stop, asyncio.get_running_loop()
        async with Node([double.child_spec(), free.child_spec(), gateway.child_spec()]):
            up.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),))
    thread.start()
    try:
        assert up.wait(30), "the gateway did not start"
        yield f"http://127.0.0.1:{gateway.port}"
    finally:
        loop, stop = state["loop"], state["stop"]
        loop.call_soon_threadsafe(stop.set)  # type: ignore[attr-defined]
        thread.join(30)


def test_openapi_json_is_served_and_lists_the_v2_endpoints(gateway_url: str) -> None:
    doc = httpx.get(f"{gateway_url}/openapi.json").json()
    assert doc["openapi"] == "3.0.3"
    assert {"/v2", "/v2/health/ready", "/v2/models/{name}/infer"} <= set(doc["paths"])
    assert "/v2/repository/models/{name}/load" in doc["paths"]


def test_every_generated_request_gets_a_documented_answer_and_never_a_5xx(
    gateway_url: str,
) -> None:
    schema = schemathesis.openapi.from_dict(httpx.get(f"{gateway_url}/openapi.json").json())
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            nonlocal calls
            calls += 1
            headers = {"Authorization": f"Bearer {TOKEN}"} if "repository" in case.path else {}
            case.call_and_validate(base_url=gateway_url, headers=headers, checks=checks)

        check()
    assert calls >= 200
