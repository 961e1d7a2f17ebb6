"""The live dashboard: the snapshot module on a real node, the event stream, the access rule,
and the page in a real browser (Debian's chromium driven by playwright) watching a port
worker die and come back."""

from __future__ import annotations

import asyncio
import functools
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
from gateway_helpers import port_env, until

from corral import Node, telemetry
from corral.gateway import Gateway
from corral.gateway.snapshot import (
    TRAIN_ROUND_EVENT,
    CrashLog,
    Rates,
    TrainingLog,
    rate,
    snapshot,
)
from corral.pipeline import Message, Pipeline
from corral.pipeline.testing import push
from corral.port import Port
from corral.runtime import Actor, ChildSpec, Supervisor
from corral.serving import Serving
from corral.testing import Gate
from corral.train import Trainer

HOSTILE = "<script>window.pwned = 1</script><img src=x onerror=window.pwned=2>"
"""A name and a crash reason that a page rendering them as HTML would run."""

TOKEN = "dashboard-token-0123456789"


class Crasher(Actor):
    """Crashes, with ``HOSTILE`` in its reason, on the cast ``"crash"``."""

    def handle_cast(self, msg: object) -> None:
        if msg == "crash":
            raise RuntimeError(HOSTILE)


class Passing(Pipeline):
    """Acks every message as it is."""

    def handle_message(self, processor: str, message: Message, context: object) -> Message:
        return message


def orders() -> Passing:
    return Passing(name="orders", producer={"module": "memory", "options": {}})


def doubling(name: str = "double", **options: object) -> Serving:
    return Serving("gateway_models:double", name=name, input_spec=((2,), "float32"), **options)


@asynccontextmanager
async def running(
    *servings: Serving, pipelines: tuple[Pipeline, ...] = (), **options: object
) -> AsyncIterator[tuple[Node, Gateway, httpx.AsyncClient]]:
    gateway = Gateway(list(servings), port=0, pipelines=pipelines, **options)
    children = [
        *(s.child_spec() for s in servings),
        *(p.child_spec() for p in pipelines),
        ChildSpec(id=f"crasher {HOSTILE}", start=Crasher, name="crasher"),
        gateway.child_spec(),
    ]
    async with Node(children, max_restarts=10) as node:
        url = f"http://127.0.0.1:{gateway.port}"
        async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:
            yield node, gateway, client


def find(row: dict[str, object], child_id: str) -> dict[str, object]:
    """The row of the child ``child_id`` anywhere under ``row``."""
    if row.get("child_id") == child_id:
        return row
    for child in row.get("children", ()):  # type: ignore[attr-defined]
        try:
            return find(child, child_id)
        except LookupError:
            pass
    raise LookupError(child_id)


# -- the snapshot module ---------------------------------------------------------------------


def test_a_gateway_refuses_pipelines_that_are_not_pipelines() -> None:
    with pytest.raises(ValueError) as info:
        Gateway([doubling()], pipelines=["orders"])  # type: ignore[list-item]
    assert str(info.value) == "Gateway: pipelines must be a list of Pipeline; got ['orders']"


def test_rate_is_the_count_per_second_between_two_readings() -> None:
    assert rate(None, (1.0, 10)) == 0.0
    assert rate((1.0, 10), (3.0, 30)) == 10.0
    assert rate((1.0, 10), (1.0, 30)) == 0.0  # no time passed
    assert rate((1.0, 10), (2.0, 4)) == 0.0  # the count went down: a restart
    rates = Rates()
    assert rates.rate("a", 1.0, 5) == 0.0
    assert rates.rate("a", 1.5, 10) == 10.0
    assert rates.rate("b", 1.5, 10) == 0.0


@pytest.mark.realtime
async def test_a_snapshot_shows_the_tree_the_servings_and_the_crashes_of_a_real_node() -> None:
    serving = doubling(partitions=2)
    pipeline = orders()
    crashes = CrashLog()
    async with running(serving, pipelines=(pipeline,)) as (node, _, client):
        crashes.attach(node)
        try:
            acked, failed = await push(pipeline, [1, 2, 3]).wait_acked()
            assert (len(acked), len(failed)) == (3, 0)
            r = await client.post(
                "/v2/models/double/infer",
                json={
                    "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]
                },
            )
            assert r.status_code == 200
            crasher = node.lookup("crasher")
            crasher.cast("crash")
            await until(lambda: node.whereis("crasher") not in (None, crasher), what="restart")
            doc = await snapshot(
                node, [serving], pipelines=[pipeline], rates=Rates(), crashes=crashes
            )
        finally:
            crashes.detach()
    json.dumps(doc)  # plain data only
    assert set(doc) == {"node", "tree", "outside", "servings", "crashes", "pipelines", "training"}
    assert doc["training"] == []  # no training log given
    assert doc["pipelines"] == [
        {
            "name": "orders",
            "running": True,
            "produced": 3,
            "in_flight": 0,
            "acked": 3,
            "failed": 0,
            "ended_per_second": 0.0,  # a first reading
            "stages": {"processor.default": {"acked": 3, "failed": 0}},
        }
    ]
    info = doc["node"]
    assert info["name"] == "corral" and "crasher" in info["registered"]
    tree = doc["tree"]
    assert tree["kind"] == "Supervisor" and tree["supervisor"] is True
    assert tree["window"] == {"used": 1, "max_restarts": 10, "max_seconds": 5.0}
    assert [c["child_id"] for c in tree["children"]] == [
        "double",
        "orders",
        f"crasher {HOSTILE}",
        "gateway",
    ]
    assert find(tree, "orders")["kind"] == "PipelineSupervisor"
    row = find(tree, f"crasher {HOSTILE}")
    assert (row["kind"], row["state"], row["restarts"], row["name"]) == (
        "Crasher",
        "running",
        1,
        "crasher",
    )
    assert row["last_crash"] == repr(RuntimeError(HOSTILE))
    assert find(tree, "double")["kind"] == "ServingServer"
    # The serving's partitions run under a supervisor linked to the serving, outside the tree.
    [partitions] = [p for p in doc["outside"] if p.get("supervisor") and p.get("children")]
    assert [c["child_id"] for c in partitions["children"]] == ["partition-0", "partition-1"]
    assert all(c["restarts"] == 0 and c["state"] == "running" for c in partitions["children"])
    [stats] = doc["servings"]
    assert stats["name"] == "double" and stats["running"] is True
    assert (stats["version"], stats["versions"], stats["swapping"]) == ("1", ["1"], False)
    assert (stats["requests"], stats["completed"], stats["batch_sizes"]) == (1, 1, {"1": 1})
    assert stats["partitions_up"] == 2 and stats["queue_length"] == 0
    assert 0 < stats["mean_compute"] <= stats["max_compute"]  # seconds
    assert 0 <= stats["mean_wait"] <= stats["max_wait"]
    # One answered request: its latency is both percentiles, and it includes its compute.
    assert stats["p50_latency"] == stats["p99_latency"] >= stats["max_compute"] > 0
    assert [p["index"] for p in stats["partitions"]] == [0, 1]
    [crash] = doc["crashes"]
    assert crash["child_id"] == f"crasher {HOSTILE}" and crash["action"] == "restart"
    assert crash["reason"] == repr(RuntimeError(HOSTILE))


async def test_the_training_log_keeps_each_trainers_latest_round_and_sums_restarts() -> None:
    log = TrainingLog()
    log.attach()
    try:
        emit = functools.partial(telemetry.emit, TRAIN_ROUND_EVENT)
        emit({"round": 0, "loss": 0.5, "restarts": 1, "duration": 0.25}, {"trainer": "b"})
        emit({"round": 1, "loss": 0.25, "restarts": 2, "duration": 0.5}, {"trainer": "b"})
        emit({"round": 0, "loss": 1.0, "restarts": 0, "duration": 0.5}, {"trainer": "a"})
        # A round emitted off the loop that attached the log (another node's) is left out.
        await asyncio.to_thread(emit, {"round": 9, "loss": 0.0, "restarts": 0}, {"trainer": "a"})
        async with Node() as node:
            doc = await snapshot(node, training=log)
    finally:
        log.detach()
    assert doc["training"] == [
        {"name": "a", "round": 0, "loss": 1.0, "restarts": 0, "duration": 0.5},
        {"name": "b", "round": 1, "loss": 0.25, "restarts": 3, "duration": 0.5},
    ]


async def test_a_supervisor_busy_restarting_shows_busy_then_its_restarted_child() -> None:
    gate = Gate()
    starts = 0

    class HeldOnRestart(Actor):
        async def init(self) -> None:
            nonlocal starts
            starts += 1
            if starts == 2:
                await gate.enter()

    async with Node([ChildSpec(id="held", start=HeldOnRestart)]) as node:
        [info] = await Supervisor.which_children(node.root)
        assert info.pid is not None
        info.pid.exit("boom")
        await gate.wait_blocked()  # the root supervisor is inside the restart
        doc = await snapshot(node, call_timeout=0.1)
        tree = doc["tree"]
        assert isinstance(tree, dict)
        assert tree["busy"] is True and "children" not in tree
        # It could not answer, so how many restarts it used is not known.
        assert tree["window"]["used"] is None  # type: ignore[index]
        gate.release()
        await Supervisor.wait_restarted(node.root, "held", info.pid)
        doc = await snapshot(node)
        [child] = doc["tree"]["children"]  # type: ignore[index]
        assert (child["child_id"], child["restarts"], child["state"]) == ("held", 1, "running")
        assert child["last_crash"] is None  # no crash log given
        # The restart window is the supervisor's own count: no crash log needed.
        assert doc["tree"]["window"]["used"] == 1  # type: ignore[index]
        await asyncio.sleep(node.options.max_seconds)  # virtual time
        doc = await snapshot(node)
        assert doc["tree"]["window"]["used"] == 0  # type: ignore[index]


# -- the event stream and the access rule -----------------------------------------------------


async def read_events(lines: AsyncIterator[str], n: int) -> list[dict[str, object]]:
    events: list[dict[str, object]] = []
    async for line in lines:
        if line.startswith("data: "):
            events.append(json.loads(line[len("data: ") :]))
            if len(events) == n:
                break
    return events


@pytest.mark.realtime
async def test_the_event_stream_sends_a_snapshot_every_half_second_until_the_gateway_stops() -> (
    None
):
    async with (
        running(doubling()) as (node, _, client),
        client.stream("GET", "/dashboard/events") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        async with asyncio.timeout(5):
            first, second = await read_events(lines, 2)
        gap = second["node"]["time"] - first["node"]["time"]  # type: ignore[operator]
        assert 0.45 < gap < 3.0  # INTERVAL = 0.5 s, plus the snapshot
        assert second["servings"][0]["name"] == "double"  # type: ignore[index]
        # Stopping the node ends the open stream at once: the drain does not wait on it.
        loop = asyncio.get_running_loop()
        began = loop.time()
        async with asyncio.timeout(10):
            await node.stop()
            async for _ in lines:
                pass
        assert loop.time() - began < 5.0


@pytest.mark.realtime
async def test_the_event_stream_shows_a_real_training_runs_latest_round_and_loss() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 4))
    data = {"x": x, "y": x @ np.array([1.0, -2.0, 0.5, 3.0])}
    args = {"features": 4, "lr": 0.05, "seed": 1}
    async with running(doubling()) as (_, _, client):
        trainer = Trainer(data, model="corral.train:LinearRegression", model_args=args, workers=1)
        async with trainer:
            result = await trainer.fit(rounds=3)
        async with client.stream("GET", "/dashboard/events") as response:
            async with asyncio.timeout(5):
                [event] = await read_events(response.aiter_lines(), 1)
    last = result.history[-1]
    assert event["training"] == [
        {
            "name": trainer.name,
            "round": 2,
            "loss": last.loss,
            "restarts": 0,
            "duration": last.duration,
        }
    ]


@pytest.mark.realtime
async def test_the_dashboard_is_open_without_an_admin_token() -> None:
    async with running(doubling()) as (_, _, client):
        page = await client.get("/dashboard")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        script = await client.get("/dashboard/static/dashboard.js")
        assert script.status_code == 200 and "textContent" in script.text
        assert "innerHTML" not in script.text
        assert (await client.get("/dashboard/static/other.js")).status_code == 404


@pytest.mark.realtime
async def test_the_dashboard_needs_the_admin_token_when_one_is_set() -> None:
    async with running(doubling(), admin_token=TOKEN) as (_, _, client):
        for path in ("/dashboard", "/dashboard/events"):
            for headers, query in [({}, ""), ({"Authorization": "Bearer wrong-token-0000000"}, "")]:
                r = await client.get(path + query, headers=headers)
                assert r.status_code == 401, path
                assert r.json() == {
                    "error": "the dashboard needs the admin token: the header Authorization: "
                    "Bearer <token>, or ?token=<token> in the address"
                }
            assert (await client.get(path + "?token=nope")).status_code == 401
        assert (await client.get("/dashboard?token=" + TOKEN)).status_code == 200
        page = await client.get("/dashboard", headers={"Authorization": f"Bearer {TOKEN}"})
        assert page.status_code == 200
        for kwargs in (
            {"params": {"token": TOKEN}},
            {"headers": {"Authorization": f"Bearer {TOKEN}"}},
        ):
            async with client.stream("GET", "/dashboard/events", **kwargs) as response:  # type: ignore[arg-type]
                assert response.status_code == 200
                async with asyncio.timeout(5):
                    [event] = await read_events(response.aiter_lines(), 1)
                assert event["node"]["name"] == "corral"  # type: ignore[index]
        # The script and the style sheet carry no data.
        assert (await client.get("/dashboard/static/dashboard.css")).status_code == 200


# -- in a real browser -------------------------------------------------------------------------

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
]


def missing(what: str, fix: str) -> None:
    """Fail under CI=true (the test must run there), else skip with the reason."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing: {fix}")
    pytest.skip(f"{what} is not installed ({fix})")


def chromium() -> str:
    """Debian's chromium, with playwright to drive it (never a browser it downloads)."""
    path = shutil.which("chromium")
    if path is None:
        missing("chromium", "apt-get install chromium; scripts/debian-packages.txt names it")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        missing("playwright", "pip install -e '.[test]'")
    assert path is not None
    return path


@pytest.mark.realtime
@pytest.mark.timeout(120)
async def test_a_browser_sees_a_killed_port_worker_restart_within_two_seconds(
    tmp_path: Path,
) -> None:
    executable = chromium()
    from playwright.async_api import async_playwright

    serving = Serving(
        "gateway_models:double",
        name=f"rank {HOSTILE}",
        input_spec=((2,), "float32"),
        kind="port",
        partitions=1,
        port_options={"spares": 0, "env": port_env()},
    )
    errors: list[str] = []
    pipeline = orders()
    async with (
        running(serving, pipelines=(pipeline,), admin_token=TOKEN) as (node, gateway, _),
        async_playwright() as pw,
    ):
        browser = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(f"http://127.0.0.1:{gateway.port}/dashboard?token={TOKEN}")
            [worker] = serving.partition_pids()
            os_pid = Port.os_pid_of(worker)
            assert os_pid is not None
            row = '.proc[data-child-id="partition-0"]'
            await page.wait_for_selector(f'{row}[data-os-pid="{os_pid}"][data-restarts="0"]')
            # A crash whose reason is markup: shown as text, never run.
            node.lookup("crasher").cast("crash")
            await page.wait_for_selector("#crashes li", timeout=5000)
            # A pipeline's messages show by stage.
            await push(pipeline, [1, 2]).wait_acked()
            await page.wait_for_selector(
                '[data-pipeline="orders"] [data-stage="processor.default"]', timeout=5000
            )
            # A trainer's round (as a Trainer emits it) shows in the Training panel.
            telemetry.emit(
                TRAIN_ROUND_EVENT,
                {"round": 4, "loss": 0.125, "restarts": 1, "duration": 0.5},
                {"trainer": f"fit {HOSTILE}"},
            )
            await page.wait_for_selector("#training [data-trainer] .loss", timeout=5000)
            assert await page.inner_text("#training [data-trainer] .loss") == "0.125000"
            assert await page.inner_text("#training [data-trainer] .round") == "4"

            os.kill(os_pid, signal.SIGKILL)
            loop = asyncio.get_running_loop()
            killed = loop.time()
            await page.wait_for_function(
                """([row, old]) => {
                    const el = document.querySelector(row + '[data-restarts="1"]');
                    return el !== null && el.dataset.osPid && el.dataset.osPid !== old;
                }""",
                arg=[row, str(os_pid)],
                timeout=2000,
            )
            seen = loop.time() - killed
            shot = tmp_path / "dashboard.png"
            await page.screenshot(path=str(shot), full_page=True)
            print(f"dashboard screenshot: {shot} (restart seen {seen:.3f} s after the kill)")

            assert await page.evaluate("window.pwned") is None
            assert await page.evaluate("document.scripts.length") == 1
            body = await page.inner_text("body")
            assert f"rank {HOSTILE}" in body and f"crasher {HOSTILE}" in body
            assert f"fit {HOSTILE}" in body
            assert "latency (p50 / p99)" in body
            assert repr(RuntimeError(HOSTILE)) in body
            assert await page.inner_text("#status") == "live"
        finally:
            await browser.close()
    assert errors == []
    assert seen < 2.0
