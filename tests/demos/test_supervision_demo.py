"""`corral demo`: the supervision tree survives every injected crash and loses no event."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from corral.cli import main
from corral.demos.supervision import run_demo


async def test_the_demo_scores_every_event_despite_crashes_and_a_supervisor_giving_up() -> None:
    out = io.StringIO()
    result = await run_demo(events=60, tick=0.05, stream=out)
    text = out.getvalue()
    assert result.lost == 0
    assert sorted(result.scored) == list(range(60))
    assert result.gave_up == 1
    assert result.crashes == 7
    assert result.restarts == 6
    assert "supervisor <1 Supervisor>: restarting 'scoring'" in text
    assert "stats untouched by the crashes next door: True" in text
    assert text.splitlines()[-1].endswith(
        "done: 60/60 events scored, 0 lost, 6 sent again after a crash, 7 crashes, "
        "6 restarts, 1 supervisor gave up and was restarted"
    )


async def test_the_demo_runs_on_the_clock_it_is_given() -> None:
    out = io.StringIO()
    result = await run_demo(events=30, tick=0.5, stream=out)
    # 30 events half a second apart, plus 6 ticks of retries and the final tick.
    assert out.getvalue().splitlines()[-1].startswith("[ 18.50s] done: 30/30 events scored")
    assert result.gave_up == 1


async def test_the_demo_rejects_too_few_events() -> None:
    with pytest.raises(ValueError, match="events must be >= 30; got 3"):
        await run_demo(events=3)


def test_the_cli_rejects_bad_options_with_the_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["supervision", "--tick", "-1"]) == 2
    assert "corral supervision: --tick must be >= 0; got -1.0" in capsys.readouterr().err


def test_corral_supervision_runs_as_a_command_and_exits_zero() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "corral.cli", "supervision", "--events", "30", "--tick", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "done: 30/30 events scored, 0 lost" in proc.stdout
