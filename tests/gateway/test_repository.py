"""The model-repository endpoints: bearer token, declared versions only, hot swap under
HTTP load with no failed request, rollback reasons, unload and load (real sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from gateway_helpers import infer_body, until

from corral import Node
from corral.gateway import Gateway
from corral.serving import Serving

pytestmark = pytest.mark.realtime

TOKEN = "s3cret-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@asynccontextmanager
async def running() -> AsyncIterator[tuple[Serving, httpx.AsyncClient]]:
    s = Serving("gateway_models:double", name="rank", input_spec=((2,), "float32"))
    versions = {"2": "gateway_models:triple", "broken": "gateway_models:broken_load"}
    gateway = Gateway([s], port=0, admin_token=TOKEN, repository={"rank": versions})
    async with Node([s.child_spec(), gateway.child_spec()]):
        url = f"http://127.0.0.1:{gateway.port}"
        async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
            yield s, client


def test_a_repository_needs_a_token_and_names_only_servings() -> None:
    s = Serving("gateway_models:double", name="rank")
    with pytest.raises(ValueError, match="a repository needs admin_token"):
        Gateway([s], repository={"rank": {"2": "gateway_models:triple"}})
    with pytest.raises(ValueError, match="repository names model 'other', which no serving is"):
        Gateway([s], admin_token=TOKEN, repository={"other": {"2": "gateway_models:triple"}})


async def test_the_repository_endpoints_refuse_a_missing_or_wrong_token_with_401() -> None:
    async with running() as (_, client):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            r = await client.post(
                "/v2/repository/models/rank/load",
                json={"parameters": {"version": "2"}},
                headers=headers,
            )
            assert r.status_code == 401
            assert r.headers["www-authenticate"] == 'Bearer realm="corral"'
        r = await client.post("/v2/repository/index", headers=AUTH)
        assert r.json() == [
            {"name": "rank", "version": "1", "state": "READY", "versions": ["2", "broken"]}
        ]


async def test_a_load_never_takes_a_factory_or_module_path_from_the_request() -> None:
    async with running() as (s, client):
        cases = [
            ({"parameters": {"version": "os:system"}}, "parameters.version must be a version "
             "declared for model 'rank' (declared: 2, broken); got 'os:system'"),
            ({"parameters": {"factory": "os:system"}}, "parameters.factory must be absent: a "
             "load names only a version the operator declared (parameters.version); models, "
             "files and import paths are never taken from a request"),
            ({"parameters": {"file:model.py": "aW1wb3J0IG9z"}}, "parameters.file:model.py must "
             "be absent: a load names only a version the operator declared (parameters."
             "version); models, files and import paths are never taken from a request"),
        ]  # fmt: skip
        for body, error in cases:
            r = await client.post("/v2/repository/models/rank/load", json=body, headers=AUTH)
            assert (r.status_code, r.json()) == (400, {"error": error})
        assert s.version == "1" and s.statistics().swaps == 0


async def test_a_failed_swap_answers_with_the_rollback_reason_and_serving_goes_on() -> None:
    async with running() as (_, client):
        r = await client.post(
            "/v2/repository/models/rank/load",
            json={"parameters": {"version": "broken"}},
            headers=AUTH,
        )
        assert r.status_code == 500
        error = r.json()["error"]
        assert error.startswith(
            "serving 'rank': swap to version 'broken' failed and was rolled back"
        )
        assert "weights missing at <path>" in error and "/srv" not in error
        r = await client.post("/v2/models/rank/infer", json=infer_body([[1, 1]]))
        assert (r.json()["model_version"], r.json()["outputs"][0]["data"]) == ("1", [2.0, 2.0])


async def test_a_swap_under_http_load_answers_every_request_with_2xx() -> None:
    async with running() as (_, client):
        stop = asyncio.Event()
        statuses: list[int] = []
        versions: set[str] = set()

        async def load() -> None:
            while not stop.is_set():
                r = await client.post("/v2/models/rank/infer", json=infer_body([[1, 1]]))
                statuses.append(r.status_code)
                if r.status_code == 200:
                    versions.add(r.json()["model_version"])

        clients = [asyncio.ensure_future(load()) for _ in range(8)]
        await until(lambda: len(statuses) >= 50, what="50 answers before the swap")
        r = await client.post(
            "/v2/repository/models/rank/load", json={"parameters": {"version": "2"}}, headers=AUTH
        )
        assert r.json() == {"name": "rank", "version": "2", "state": "READY"}
        seen = len(statuses)
        await until(lambda: len(statuses) >= seen + 50, what="50 answers after the swap")
        stop.set()
        await asyncio.gather(*clients)
        assert set(statuses) == {200}
        assert versions == {"1", "2"}
        meta = (await client.get("/v2/models/rank")).json()
        assert meta["versions"] == ["2"]
        assert (await client.get("/v2/models/rank/versions/1")).status_code == 404


async def test_unload_takes_the_model_off_until_load_brings_it_back() -> None:
    async with running() as (s, client):
        r = await client.post("/v2/repository/models/rank/unload", headers=AUTH)
        assert r.json() == {"name": "rank", "state": "UNAVAILABLE"}
        assert (await client.get("/v2/models/rank/ready")).status_code == 400
        assert (await client.get("/v2/health/ready")).status_code == 400
        r = await client.post("/v2/models/rank/infer", json=infer_body([[1, 1]]))
        assert r.status_code == 503
        assert r.json() == {
            "error": "model 'rank' is unloaded; POST /v2/repository/models/rank/load serves it "
            "again"
        }
        assert s.statistics().requests == 0  # the serving itself kept running, untouched
        r = await client.post("/v2/repository/models/rank/load", headers=AUTH)
        assert r.json() == {"name": "rank", "version": "1", "state": "READY"}
        r = await client.post("/v2/models/rank/infer", json=infer_body([[1, 1]]))
        assert r.status_code == 200
