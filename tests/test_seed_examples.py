"""The seed examples (examples/seed/) run as real scripts and print what they claim.

Each test runs one script in a subprocess with ``--quick`` from the repository root and
checks facts in its output: exact matrices, learned weights near the true ones, every
request answered across a crash, batch sizes, recommendations that exclude seen items.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "seed"
SCIFI = {"Alien", "Aliens", "The Matrix", "Blade Runner", "Arrival"}


def run_example(name: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(SEED / name), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"{name} exited with {proc.returncode}:\n{proc.stderr}"
    return proc.stdout


def field(output: str, prefix: str) -> str:
    """The rest of the only line that starts with ``prefix``."""
    lines = [line[len(prefix) :] for line in output.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, f"expected one line starting {prefix!r}; got {lines}\n{output}"
    return lines[0].strip()


def test_nx_basics_prints_the_tensor_its_transpose_and_their_product() -> None:
    out = run_example("nx_basics.py", "--quick")
    assert "tensor (int64):\n[[1 2]\n [3 4]]\n" in out
    assert "transpose:\n[[1 3]\n [2 4]]\n" in out
    assert "tensor @ transpose:\n[[ 5 11]\n [11 25]]\n" in out
    values = ast.literal_eval(field(out, "linear_regression backend=numpy:"))
    assert len(values) == 4 and all(isinstance(v, float) for v in values)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_nx_basics_runs_linear_regression_with_jax_jit_when_jax_is_installed() -> None:
    out = run_example("nx_basics.py", "--quick")
    assert field(out, "linear_regression backend=jax:").endswith("(matches: True)")


def test_nx_basics_says_the_jax_path_was_skipped_without_jax() -> None:
    out = run_example("nx_basics.py", "--quick", "--no-jax")
    assert field(out, "linear_regression backend=jax:").startswith("skipped")


def test_service_manager_answers_every_request_across_a_service_crash() -> None:
    out = run_example("service_manager.py", "--quick")
    assert field(out, "answered") == "8/8 requests; errors for [4]"
    assert "ValueError('anomaly model: NaN in input" in field(out, "manager: anomaly crashed on")
    assert re.search(r"anomaly is back as .*; re-sending requests \[6, 8\]", out), out
    # every request got exactly one response; the ones queued behind the crash got results
    responses = re.findall(r"^response (\d+) from (\w+): (.*)$", out, re.MULTILINE)
    assert sorted(int(i) for i, _, _ in responses) == list(range(1, 9))
    by_id = {int(i): (service, ast.literal_eval(r)) for i, service, r in responses}
    assert by_id[4][0] == "anomaly" and "error" in by_id[4][1]
    assert by_id[6] == ("anomaly", {"output": True}) and by_id[8] == ("anomaly", {"output": False})
    assert by_id[1] == ("sentiment", {"output": "positive (+0.96)"})
    assert by_id[3] == ("forecast", {"output": 6.07})
    restarts = ast.literal_eval(field(out, "restarts:"))
    assert restarts == {"sentiment": 0, "anomaly": 1, "forecast": 0}


def test_python_port_survives_a_sigkill_of_its_worker() -> None:
    out = run_example("python_port.py", "--quick")
    first = re.search(r"^worker os pid (\d+): accuracy ([\d.]+) on 150$", out, re.MULTILINE)
    assert first is not None, out
    assert float(first[2]) > 0.95
    assert "killed by SIGKILL" in field(out, "in-flight call failed at once: PortExited:")
    assert field(out, "port process exited:") == "PortExited (signal 9)"
    assert field(out, "supervisor restarted it:") == "restart_count=1"
    after = re.search(r"^new worker os pid (\d+) \(was (\d+)\): accuracy ([\d.]+), same "
                      r"predictions: True$", out, re.MULTILINE)  # fmt: skip
    assert after is not None, out
    assert after[2] == first[1] and after[1] != first[1] and after[3] == first[2]


def test_recommendations_update_per_event_and_never_include_seen_items() -> None:
    out = run_example("recommendation_system.py", "--quick")
    events = re.findall(r"^event (\w+) (\w+) '([^']+)' -> (\[.*\])$", out, re.MULTILINE)
    assert len(events) == 10
    seen: dict[str, set[str]] = {}
    for user, _kind, item, recommended in events:
        seen.setdefault(user, set()).add(item)
        recs = ast.literal_eval(recommended)
        assert len(recs) == 3 and not seen[user] & set(recs), (user, seen[user], recs)
    # the first recommendations follow the genre of what the user touched
    assert set(ast.literal_eval(events[0][3])) <= SCIFI - {"Alien"}
    finals = re.findall(r"^final (\w+): seen=(\[.*\]) recommended=(\[.*\])$", out, re.MULTILINE)
    assert [u for u, _, _ in finals] == ["ana", "bo", "cy"]
    for user, seen_text, recommended in finals:
        assert set(ast.literal_eval(seen_text)) == seen[user]
        assert not seen[user] & set(ast.literal_eval(recommended))


def test_distributed_ml_averages_four_workers_to_the_true_weights() -> None:
    out = run_example("distributed_ml.py", "--quick")
    assert field(out, "4 workers, shards of") == "[500, 500, 500, 500] rows"
    losses = [float(x) for x in re.findall(r"^round \d+: train loss ([\d.]+)", out, re.MULTILINE)]
    assert len(losses) == 8
    assert losses[-1] < losses[0] / 100
    assert float(field(out, "max |w - W_TRUE|:")) < 0.05
    assert float(field(out, "|b - B_TRUE|:")) < 0.05
    assert ast.literal_eval(field(out, "true    w:").split("  b:")[0]) == [
        1.5, -2.0, 0.5, 0.0, 3.0, -1.0, 0.25, 2.0, -0.75, 1.0,
    ]  # fmt: skip


def test_ml_pipeline_handles_every_message_in_batches_of_100_and_drops_outliers() -> None:
    out = run_example("ml_pipeline.py", "--quick")
    assert field(out, "messages handled:") == "250 of 250"
    assert field(out, "successful:") == "243; failed as outliers: 7 (injected 7)"
    assert field(out, "first failure:").startswith("outlier: ")
    assert field(out, "batches:") == "3; sizes: [100, 100, 43]"
    # two full batches cut by size, the rest by the 1 s batch_timeout
    assert ast.literal_eval(field(out, "batch triggers:")) == ["size", "size", "timeout"]
    assert field(out, "per-message and batch predictions agree:") == "True"
