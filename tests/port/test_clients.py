"""The Erlang and Elixir clients shipped in corral/port/clients/, run on a real VM.

Each client (corral_port.erl, a gen_server; corral_port.ex, Corral.Port, a GenServer) drives
a real corral worker serving tests/port/port_handlers.py: a call, a cast, an error with its
traceback, a call timeout, SIGKILLed workers seen as exits by a link and by a supervisor
(which restarts the client), a failed setup, a bad option and a graceful stop.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import corral.port
from corral.port import PortOptions
from corral.port.protocol import EXIT_PROTOCOL_ERROR, EXIT_SETUP_FAILED

HERE = Path(__file__).resolve().parent
CLIENTS = Path(corral.port.clients_dir())

CHECKS = [
    "ok call",
    "ok cast",
    "ok call_error",
    "ok call_timeout",
    "ok after_timeout",
    "ok killed_exit_seen_by_link",
    "ok setup_failed_exit",
    "ok bad_option",
    "ok supervised_exit",
    "ok supervisor_restarted",
    "ok child_spec",
    "ok stop",
    "ok stopped_worker_gone",
    "done",
]


def _tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} not found: CI must have Debian's {package} (make debs)")
        pytest.skip(f"{name} not found; install Debian's {package} (make debs) to run this")
    return found


def _python_path() -> str:
    return os.pathsep.join([str(HERE), *sys.path])


def _run(argv: list[str], cwd: Path) -> list[str]:
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "ERL_CRASH_DUMP_SECONDS": "0"},
        cwd=cwd,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [line for line in proc.stdout.splitlines() if line.startswith(("ok ", "FAIL", "done"))]


def test_clients_dir_names_the_directory_of_both_shipped_clients() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "corral.port", "--clients-dir"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout == f"{CLIENTS}\n"
    assert sorted(p.name for p in CLIENTS.iterdir()) == ["corral_port.erl", "corral_port.ex"]


def test_the_worker_help_states_the_real_spin_default_and_the_exit_statuses() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "corral.port", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    text = " ".join(proc.stdout.split())
    assert (
        f"corral's Port passes its spin option, {PortOptions(handler='m:H').spin!r} by default"
        in text
    )
    assert f"{EXIT_SETUP_FAILED} the handler could not be imported" in text
    assert f"{EXIT_PROTOCOL_ERROR} the port sent something that broke the protocol" in text


def test_the_erlang_client_serves_calls_casts_errors_and_exits(tmp_path: Path) -> None:
    erl, erlc = _tool("erl", "erlang-nox"), _tool("erlc", "erlang-nox")
    sources = [
        CLIENTS / "corral_port.erl",
        HERE / "erlang" / "corral_port_client_test.erl",
        HERE / "erlang" / "corral_port_client_test_sup.erl",
    ]
    subprocess.run(
        [erlc, "-Werror", "-o", str(tmp_path), *map(str, sources)], check=True, timeout=120
    )
    args = f"[{_erl_string(sys.executable)}, {_erl_string(_python_path())}]"
    expression = f"corral_port_client_test:run({args})"
    argv = [erl, "-noshell", "-pa", str(tmp_path), "-eval", expression]
    assert _run(argv, tmp_path) == CHECKS


def test_the_elixir_client_serves_calls_casts_errors_and_exits(tmp_path: Path) -> None:
    _tool("erl", "erlang-nox")
    elixir, elixirc = _tool("elixir", "elixir"), _tool("elixirc", "elixir")
    subprocess.run(
        [elixirc, "--warnings-as-errors", "-o", str(tmp_path), str(CLIENTS / "corral_port.ex")],
        check=True,
        timeout=120,
        cwd=tmp_path,
    )
    script = HERE / "elixir" / "corral_port_client_test.exs"
    argv = [elixir, "-pa", str(tmp_path), str(script), sys.executable, _python_path()]
    assert _run(argv, tmp_path) == CHECKS


def _erl_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
