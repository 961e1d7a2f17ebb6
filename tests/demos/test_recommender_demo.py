"""`corral demo` end to end: real training workers, real port partitions, real SIGKILLs.

Each run checks what the demo promises: every valid event gets a recommendation (none
lost), the injected bad events are dropped and counted exactly, the model beats the
popularity baseline, a killed model worker and a hot swap fail no request.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from corral.cli import main
from corral.demos.recommender import DemoOptions, DemoResult, render, run_recommender_demo
from corral.demos.recommender.data import load_movielens
from corral.demos.recommender.stream import Catalogue, InvalidEvent, make_events, parse_event
from servers.kafka import KafkaServer


def injected(events: int, seed: int = 0) -> dict[str, int]:
    """How many bad events of each kind the demo's stream of ``events`` ratings holds."""
    data = load_movielens()
    cut = data.cut(0.8)
    counts: dict[str, int] = {}
    catalogue = Catalogue.of(data)
    for event in make_events(data, cut, cut + events, bad_every=100, seed=seed):
        try:
            parse_event({**event, "sent": "0"}, catalogue)
        except InvalidEvent as exc:
            counts[exc.kind] = counts.get(exc.kind, 0) + 1
    return counts


def check_nothing_lost(result: DemoResult, events: int) -> None:
    assert result.valid == events
    assert result.scored == events, result.failed
    assert result.lost == 0 and result.failed == []
    assert result.dropped == injected(events)
    assert result.stream == events + sum(result.dropped.values())
    assert sum(result.versions.values()) == events
    assert result.out_of_order == 0  # partition_by keeps each user's events in order
    assert not [n for n in result.notes if "acknowledged" in n], result.notes


@pytest.mark.realtime
async def test_the_trained_model_beats_popularity_and_loses_no_event() -> None:
    out = io.StringIO()
    result = await run_recommender_demo(DemoOptions(events=3000), out=out)
    check_nothing_lost(result, 3000)
    assert result.hit_rate > result.popular_hit_rate > 0.0
    assert result.ndcg > result.popular_ndcg > 0.0
    assert result.latency_p50 <= result.latency_p99
    text = out.getvalue()
    assert "GroupLens" in text and "research use only" in text  # the licence, told
    assert "training v1 [" in text and "replaying [" in text  # progress bars
    table = render(result, DemoOptions(events=3000))
    assert "the model beats the popularity baseline" in table
    assert "3,000 valid: 3,000 recommended, 0 lost" in table


@pytest.mark.realtime
async def test_chaos_and_a_hot_swap_fail_no_request() -> None:
    # A paced source (20 s) keeps the stream going while workers are killed and v2 trains
    # (about 5 s, from a third of the way in); kills 2 s apart stay within the partitions
    # supervisor's restart intensity (4 in 5 s).
    options = DemoOptions(
        events=2000,
        rounds=2,
        swap_rounds=1,
        chaos=True,
        chaos_interval=2.0,
        swap=True,
        rate=100.0,
        workers=2,
    )
    out = io.StringIO()
    result = await run_recommender_demo(options, out=out)
    check_nothing_lost(result, 2000)
    assert result.kills >= 3
    assert result.swap_at is not None and result.swap_at < result.stream
    assert result.versions["1"] > 0 and result.versions["2"] > 0
    table = render(result, options)
    assert f"chaos         {result.kills} model workers SIGKILLed" in table
    assert "training v2 [" in out.getvalue()


@pytest.mark.realtime
async def test_events_can_come_through_a_redis_stream(redis_url: str) -> None:
    options = DemoOptions(events=1000, rounds=1, workers=2, source=redis_url)
    result = await run_recommender_demo(options, out=io.StringIO())
    check_nothing_lost(result, 1000)
    assert result.duplicates == 0
    assert "from a Redis stream" in render(result, options)


@pytest.mark.realtime
async def test_events_can_come_through_a_kafka_topic(kafka_server: KafkaServer) -> None:
    options = DemoOptions(events=1000, rounds=1, workers=2, source=kafka_server.url)
    result = await run_recommender_demo(options, out=io.StringIO())
    check_nothing_lost(result, 1000)
    assert result.duplicates == 0
    assert "from a Kafka topic" in render(result, options)


def test_bad_options_are_refused_with_the_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--events", "5"]) == 2
    assert "corral demo: --events must be an int >= 100; got 5" in capsys.readouterr().err
    assert main(["demo", "--source", "amqp://x"]) == 2
    err = capsys.readouterr().err
    assert (
        "--source must be 'memory', a redis://host:port/db URL or a kafka://host:port URL; "
        "got 'amqp://x'"
    ) in err
    with pytest.raises(ValueError, match="--partitions must be an int >= 1; got 0"):
        DemoOptions(partitions=0).check()


def test_corral_demo_quick_runs_as_a_command_and_prints_the_table() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "corral.cli", "demo", "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    lines = proc.stdout.splitlines()
    assert lines[0] == "corral demo: a real-time recommender on MovieLens 100K"
    assert any(line.startswith("hit rate @10") for line in lines)
    assert any(line.startswith("events/s") for line in lines)
    assert lines[-1].startswith("the model beats the popularity baseline")
    assert lines[-1].endswith("no event lost")


def test_an_unreachable_redis_source_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    from servers.common import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    assert main(["demo", "--events", "100", "--rounds", "1", "--source", url]) == 1
    err = capsys.readouterr().err
    assert f"corral demo: StreamWriter: cannot reach {url}" in err


def test_demo_help_prints_percent_signs_once(capsys: pytest.CaptureFixture[str]) -> None:
    # argparse %-formats help= strings but not a parser's description, so "%%" showed twice.
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = capsys.readouterr().out
    assert "the first 80% of MovieLens 100K" in " ".join(out.split())
    assert "%%" not in out


@pytest.mark.realtime
async def test_an_unpaced_swap_lands_mid_stream_and_both_versions_serve() -> None:
    # Unpaced, the replay used to end before v2 had trained: "v2 took over after event
    # 20,200 of 20,200". v2 is now trained first and swapped in by event count.
    options = DemoOptions(events=3000, rounds=1, swap_rounds=1, workers=2, swap=True)
    result = await run_recommender_demo(options, out=io.StringIO())
    check_nothing_lost(result, 3000)
    assert result.swap_at is not None and 0 < result.swap_at < result.stream
    assert result.versions["1"] > 0 and result.versions["2"] > 0
    table = render(result, options)
    assert f"(v2 took over after event {result.swap_at:,} of {result.stream:,})" in table


def test_stale_runs_directories_and_streams_are_removed_live_ones_kept(
    tmp_path: Path, redis_url: str
) -> None:
    import socket

    from corral.demos.recommender import cleanup
    from corral.pipeline.producers.redis_writer import StreamWriter

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    gone = int(dead.stdout)
    assert not cleanup.pid_alive(gone)
    host, alive = socket.gethostname(), os.getpid()
    (tmp_path / f"corral-demo-{gone}-abc").mkdir()
    (tmp_path / f"corral-demo-{gone}-abc" / "v1.npz").write_bytes(b"x" * 100)
    (tmp_path / f"corral-demo-{alive}-def").mkdir()
    (tmp_path / "corral-demo-notapid").mkdir()
    removed = cleanup.remove_stale_directories(tmp_path)
    assert removed == [tmp_path / f"corral-demo-{gone}-abc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"corral-demo-{alive}-def",
        "corral-demo-notapid",
    ]

    names = {
        "stale": f"corral-demo:{host}:{gone}:0001",
        "stale_old_format": f"corral-demo:{gone}:0002",
        "live": f"corral-demo:{host}:{alive}:0003",
        "other_host": f"corral-demo:elsewhere:{gone}:0004",
    }

    async def check() -> None:
        async with StreamWriter(redis_url, "unrelated") as writer:
            for name in names.values():
                async with StreamWriter(redis_url, name) as w:
                    await w.add([{"n": "1"}])
            await writer.add([{"n": "1"}])
            removed = await cleanup.remove_stale_streams(writer)
            assert removed == sorted([names["stale"], names["stale_old_format"]])
            left = await writer.streams("*")
            assert left == sorted([names["live"], names["other_host"], "unrelated"])

    asyncio.run(check())


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_demo_cleanly_and_removes_its_stream_and_directory(
    signum: int, code: int, tmp_path: Path, redis_url: str
) -> None:
    from redis import Redis

    argv = [sys.executable, "-m", "corral.cli", "demo", "--events", "2000", "--rounds", "1",
            "--workers", "1", "--rate", "100", "--source", redis_url]  # fmt: skip
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        lines = []
        for raw in proc.stdout:  # bounded by the test's timeout
            lines.append(raw.decode(errors="replace"))
            if "replaying 2," in lines[-1]:
                break
        else:
            pytest.fail("the demo never started replaying: " + "".join(lines))
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "".join(lines) + out.decode(errors="replace")
    assert proc.returncode == code, text + err.decode(errors="replace")
    name = signal.Signals(signum).name
    assert f"corral demo: interrupted by {name}; stopped and removed stream corral-demo:" in text
    assert list(tmp_path.glob("corral-demo-*")) == []
    with Redis.from_url(redis_url) as client:
        assert list(client.scan_iter(match="corral-demo:*")) == []
