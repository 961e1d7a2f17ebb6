"""The gateway's /metrics (GatewayOptions.metrics): scraped over a real socket after known
traffic, parsed with prometheus-client's text parser; guarded by the admin token when there is
one; absent when the option is off."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from gateway_helpers import infer_body
from prometheus_client.parser import text_string_to_metric_families

from corral import Node, telemetry
from corral.gateway import Gateway
from corral.serving import Serving

pytestmark = pytest.mark.realtime

TOKEN = "a-token-of-16-chars-at-least"


@asynccontextmanager
async def running(**options: object) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient]]:
    serving = Serving("gateway_models:double", name="double", input_spec=((2,), "float32"))
    gateway = Gateway([serving], port=0, **options)
    async with Node([serving.child_spec(), gateway.child_spec()]):
        url = f"http://127.0.0.1:{gateway.port}"
        async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:
            yield gateway, client


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_counts_the_requests_the_gateway_answered() -> None:
    async with running(metrics=True) as (gateway, client):
        for i in range(3):
            r = await client.post("/v2/models/double/infer", json=infer_body([[i, i]]))
            assert r.status_code == 200
        scrape = await client.get("/metrics")
        assert scrape.status_code == 200
        assert scrape.headers["content-type"].startswith("text/plain; version=0.0.4")
        got = samples(scrape.text)
    completed = (("outcome", "completed"), ("serving", "double"), ("version", "1"))
    assert got[("corral_serving_requests_total", completed)] == 3
    assert got[("corral_serving_partitions_up", (("serving", "double"),))] == 1
    assert got[("corral_serving_queue_length", (("serving", "double"),))] == 0
    # The gateway's handler listens only while the gateway runs.
    assert gateway.metrics is not None and not gateway.metrics.attached
    assert not [h for h in telemetry.list_handlers() if h.handler_id.startswith("corral-metrics")]


async def test_metrics_needs_the_admin_token_when_there_is_one() -> None:
    async with running(metrics=True, admin_token=TOKEN) as (_, client):
        refused = await client.get("/metrics")
        assert refused.status_code == 401
        assert refused.json() == {
            "error": "/metrics needs the admin token: the header Authorization: Bearer <token>"
        }
        assert refused.headers["www-authenticate"] == 'Bearer realm="corral"'
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and "corral_serving_requests_total" in ok.text


async def test_no_metrics_endpoint_unless_asked_for() -> None:
    async with running() as (gateway, client):
        assert gateway.metrics is None
        assert (await client.get("/metrics")).status_code == 404
