"""Logs a user sees: the entry points print crash reports on stderr by default (text or JSON
lines), an application's own logging setup is left alone, and importing corral installs no
handler."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from corral import logs

# A node whose nested worker crashes once: the crash report names its supervisor by the
# path of child ids, 'rank/partitions-v1'. argv[1] is what to do about logging first.
CRASH_ONCE = textwrap.dedent(
    """
    import logging, sys
    from corral import Actor, ChildSpec, Node, Supervisor, logs

    class Boom(Actor):
        def handle_cast(self, msg):
            raise RuntimeError("boom")

    def partitions():
        return Supervisor([ChildSpec(id="worker", start=Boom)])

    def rank():
        return Supervisor([ChildSpec(id="partitions-v1", start=partitions, type="supervisor")])

    async def main(node):
        [rank_child] = await Supervisor.which_children(node.root)
        [part] = await Supervisor.which_children(rank_child.pid)
        [worker] = await Supervisor.which_children(part.pid)
        worker.pid.cast("crash")
        await Supervisor.wait_restarted(part.pid, "worker", worker.pid)

    if sys.argv[1] == "json":
        logs.configure("info", "json")
    elif sys.argv[1] == "app":
        logging.basicConfig(level=logging.WARNING, format="APP %(levelname)s %(message)s")
    Node([ChildSpec(id="rank", start=rank, type="supervisor")]).run(main)
    """
)

REPORT = (
    r"supervisor 'rank/partitions-v1': child 'worker' <\d+ Boom> exited with "
    r"RuntimeError\('boom'\); restarting \(restart 1\)"
)


def _run(tmp_path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "crash_once.py"
    script.write_text(CRASH_ONCE)
    return subprocess.run(
        [sys.executable, str(script), mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_crash_under_node_run_prints_its_crash_report_on_stderr_by_default(
    tmp_path: Path,
) -> None:
    proc = _run(tmp_path, "default")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    [report] = [line for line in lines if "ERROR corral.supervisor: " in line]
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ERROR corral.supervisor: " + REPORT, report
    ), report
    assert "Traceback (most recent call last):" in proc.stderr
    assert "RuntimeError: boom" in proc.stderr


def test_json_lines_carry_the_crash_reports_fields(tmp_path: Path) -> None:
    proc = _run(tmp_path, "json")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stderr.splitlines()]
    [report] = [r for r in records if r["level"] == "ERROR"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", report.pop("time"))
    assert re.fullmatch(REPORT, report.pop("message"))
    assert re.fullmatch(r"<\d+ Boom>", report.pop("pid"))
    assert "RuntimeError: boom" in report.pop("exception")
    assert report == {
        "level": "ERROR",
        "logger": "corral.supervisor",
        "supervisor": "rank/partitions-v1",
        "child_id": "worker",
        "reason": "RuntimeError('boom')",
        "restart_count": 0,
        "action": "restart",
    }


def test_node_run_leaves_an_applications_own_logging_alone(tmp_path: Path) -> None:
    proc = _run(tmp_path, "app")
    assert proc.returncode == 0, proc.stderr
    [report] = [line for line in proc.stderr.splitlines() if line.startswith("APP ")]
    assert re.fullmatch("APP ERROR " + REPORT, report), report
    assert "corral.supervisor" not in proc.stderr  # printed once, by the application's handler


def test_importing_corral_installs_no_handler() -> None:
    code = (
        "import logging, corral, corral.runtime, corral.pipeline, corral.serving, corral.logs\n"
        "print([type(h).__name__ for h in logging.getLogger('corral').handlers],"
        " logging.getLogger().handlers)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "['NullHandler'] []"


def test_configure_installs_one_handler_and_the_last_call_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # pytest's own capture handler on the root logger counts as the application's setup.
    assert logs.configure() is False
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    corral = logging.getLogger("corral")
    monkeypatch.setattr(corral, "handlers", [logging.NullHandler()])
    first, second = io.StringIO(), io.StringIO()
    try:
        assert logs.configure("debug", stream=first) is True
        assert logs.configure("WARNING", "json", stream=second) is True
        assert logs.configure_default() is False  # Node.run keeps what a command configured
        logging.getLogger("corral.test").info("not at warning")
        logging.getLogger("corral.test").warning("seen")
        assert [type(h).__name__ for h in corral.handlers] == ["NullHandler", "_Handler"]
    finally:
        corral.setLevel(logging.NOTSET)  # also clears the loggers' level caches
    assert first.getvalue() == ""
    [line] = second.getvalue().splitlines()
    record = json.loads(line)
    del record["time"]
    assert record == {"level": "WARNING", "logger": "corral.test", "message": "seen"}


def test_configure_names_a_wrong_level_or_format() -> None:
    with pytest.raises(ValueError) as info:
        logs.configure("loud")
    assert str(info.value) == (
        "corral logging: level must be one of debug, info, warning, error, critical; got 'loud'"
    )
    with pytest.raises(ValueError) as info:
        logs.configure("info", "xml")
    assert str(info.value) == "corral logging: format must be one of text, json; got 'xml'"


def test_the_commands_take_log_level_and_log_format() -> None:
    from corral.cli import _parser
    from corral.gateway.cli import build_parser

    demo = _parser().parse_args(["demo", "--log-level", "DEBUG", "--log-format", "json"])
    assert (demo.log_level, demo.log_format) == ("debug", "json")
    train = _parser().parse_args(["train", "linear", "--data", "d.npz"])
    assert (train.log_level, train.log_format) == ("warning", "text")
    serve = build_parser().parse_args(["m:f", "--log-format", "json"])
    assert (serve.log_level, serve.log_format) == ("info", "json")
