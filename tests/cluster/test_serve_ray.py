"""`corral serve --ray ADDRESS`: the same command line, its partitions on the Ray cluster;
SIGTERM drains, exits 0, and the partition actors are gone."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from ray_cluster import WORKER_PATHS, RayCluster

from corral.cluster import serving_actors


def read_lines(stream: object, lines: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.put(line)


def wait_for(lines: queue.Queue[str], log: list[str], pattern: str) -> re.Match[str]:
    """The first stderr line matching ``pattern`` (the process's own log: waiting for an
    external process, with a bound)."""
    end = time.monotonic() + 60.0
    while True:
        try:
            line = lines.get(timeout=max(0.0, end - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no log line like {pattern!r}; log: {log}") from None
        log.append(line)
        if found := re.search(pattern, line):
            return found


def test_corral_serve_with_ray_runs_partitions_on_the_cluster(ray_cluster: RayCluster) -> None:
    import ray

    path = os.pathsep.join(str(p) for p in WORKER_PATHS)
    args = ["serving_models:double", "--name", "cli-d", "--http", "127.0.0.1:0"]
    args += ["--ray", ray_cluster.address, "--num-cpus", "0.5", "--partitions", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral.cli", "serve", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
    )
    lines: queue.Queue[str] = queue.Queue()
    log: list[str] = []
    reader = threading.Thread(target=read_lines, args=(proc.stderr, lines), daemon=True)
    reader.start()
    try:
        port = wait_for(lines, log, r"listening on http://127\.0\.0\.1:(\d+)").group(1)
        body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
        r = httpx.post(f"http://127.0.0.1:{port}/v2/models/cli-d/infer", json=body, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == [2.0, 4.0]
        names = serving_actors("cli-d")
        assert names == ["serving:cli-d-v1-p0", "serving:cli-d-v1-p1"]
        handles = [ray.get_actor(name) for name in names]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        reader.join(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()
    for handle in handles:
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(handle.corral_watch.remote(), timeout=60)
    assert serving_actors("cli-d") == []
