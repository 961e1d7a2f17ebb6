"""A real Erlang VM opens corral workers as ports and drives them with term_to_binary."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _erlang_tools() -> tuple[str, str]:
    erl, erlc = shutil.which("erl"), shutil.which("erlc")
    if erl is None or erlc is None:
        if os.environ.get("CI") == "true":
            pytest.fail("erl/erlc not found: CI must have Debian's erlang-nox (make debs)")
        pytest.skip("erl/erlc not found; install Debian's erlang-nox (make debs) to run this")
    return erl, erlc


def test_an_erlang_program_drives_a_corral_worker_as_a_port(tmp_path: Path) -> None:
    erl, erlc = _erlang_tools()
    subprocess.run(
        [erlc, "-o", str(tmp_path), str(HERE / "erlang" / "corral_port_peer.erl")],
        check=True,
        timeout=120,
    )
    env = {**os.environ, "ERL_CRASH_DUMP_SECONDS": "0"}
    python_path = os.pathsep.join([str(HERE), *sys.path])
    expression = (
        f"corral_port_peer:run([{_erl_string(sys.executable)}, {_erl_string(python_path)}])"
    )
    proc = subprocess.run(
        [erl, "-noshell", "-pa", str(tmp_path), "-eval", expression],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("ok ", "FAIL", "done"))]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert lines == [
        "ok call_echo",
        "ok call_error",
        "ok plain_term",
        "ok ndarray_sum",
        "ok ndarray_bare",
        "ok ndarray_pair",
        "ok ndarray_reply",
        "ok cast",
        "ok killed_exit_status",
        "ok garbage_exit_status",
        "ok os_exit_status",
        "ok stop_exit_status",
        "done",
    ]


def _erl_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
