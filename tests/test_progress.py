"""corral._progress.ProgressBar: exact output on a fake terminal and a plain stream."""

from __future__ import annotations

import io

import pytest

from corral._progress import ProgressBar, format_duration, format_value


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_redraws_one_line_at_most_every_min_interval() -> None:
    clock, out = FakeClock(), FakeTTY()
    bar = ProgressBar(40, label="train", stream=out, width=10, min_interval=0.5, clock=clock)
    assert out.getvalue() == "\rtrain [..........] 0/40 0%"
    clock.now = 1.0
    bar.update(4, loss=0.123456)
    clock.now = 1.2  # within min_interval of the last draw: counted, not drawn
    bar.update(8)
    clock.now = 4.0
    bar.update(0, loss=0.1)
    clock.now = 5.0
    bar.close()
    assert out.getvalue().split("\r")[1:] == [
        "train [..........] 0/40 0%",
        "train [#.........] 4/40 10% 4.0/s eta 9s  loss=0.1235",
        "train [###.......] 12/40 30% 3.0/s eta 9s  loss=0.1  ",
        "train [###.......] 12/40 30% 2.4/s in 5s  loss=0.1 \n",
    ]


def test_a_shorter_line_is_padded_over_the_longer_one_before_it() -> None:
    clock, out = FakeClock(), FakeTTY()
    bar = ProgressBar(None, label="x", stream=out, min_interval=0.0, clock=clock)
    clock.now = 1.0
    bar.update(1, note="longer text")
    bar.update(1, note="s")
    assert out.getvalue().split("\r")[2:] == [
        "x 1 1.0/s 1s  note=longer text",
        "x 2 2.0/s 1s  note=s          ",
    ]


def test_a_plain_stream_gets_a_line_per_10_percent_step_and_the_final_line() -> None:
    clock, out = FakeClock(), io.StringIO()
    with ProgressBar(20, label="fit", stream=out, width=4, clock=clock) as bar:
        for k in range(20):
            clock.now = float(k + 1)
            bar.update(loss=1.0 / (k + 1))
    assert out.getvalue().splitlines() == [
        "fit [....] 2/20 10% 1.0/s eta 18s  loss=0.5",
        "fit [....] 4/20 20% 1.0/s eta 16s  loss=0.25",
        "fit [#...] 6/20 30% 1.0/s eta 14s  loss=0.1667",
        "fit [#...] 8/20 40% 1.0/s eta 12s  loss=0.125",
        "fit [##..] 10/20 50% 1.0/s eta 10s  loss=0.1",
        "fit [##..] 12/20 60% 1.0/s eta 8s  loss=0.08333",
        "fit [##..] 14/20 70% 1.0/s eta 6s  loss=0.07143",
        "fit [###.] 16/20 80% 1.0/s eta 4s  loss=0.0625",
        "fit [###.] 18/20 90% 1.0/s eta 2s  loss=0.05556",
        "fit [####] 20/20 100% 1.0/s in 20s  loss=0.05",
    ]


def test_one_update_crossing_several_steps_prints_one_line() -> None:
    clock, out = FakeClock(), io.StringIO()
    bar = ProgressBar(10, label="r", stream=out, width=2, clock=clock)
    clock.now = 2.0
    bar.update(1)
    bar.update(4)
    bar.set_fields(rmse=0.9)  # no line on a plain stream
    bar.close()
    bar.close()
    bar.update(3)
    assert out.getvalue() == (
        "r [..] 1/10 10% 0.5/s eta 18s\n"
        "r [#.] 5/10 50% 2.5/s eta 2s\n"
        "r [#.] 5/10 50% 2.5/s in 2s  rmse=0.9\n"
    )


def test_an_unknown_total_on_a_plain_stream_prints_at_most_every_min_interval() -> None:
    clock, out = FakeClock(), io.StringIO()
    bar = ProgressBar(None, label="rows", stream=out, min_interval=10.0, clock=clock)
    for t in (1.0, 5.0, 11.0, 12.0, 100.0):
        clock.now = t
        bar.update(100)
    bar.close()
    assert out.getvalue().splitlines() == [
        "rows 100 100/s 1s",
        "rows 300 27.3/s 11s",
        "rows 500 5.0/s 1m40s",
        "rows 500 5.0/s in 1m40s",
    ]


def test_fields_are_sticky_in_first_seen_order() -> None:
    clock, out = FakeClock(), FakeTTY()
    bar = ProgressBar(2, label="t", stream=out, width=2, min_interval=0.0, clock=clock)
    clock.now = 1.0
    bar.update(loss=2.5, rmse=1.0)
    bar.set_fields(loss=12345.678, epoch=3)
    assert (
        out.getvalue().split("\r")[-1]
        == "t [#.] 1/2 50% 1.0/s eta 1s  loss=1.235e+04 rmse=1 epoch=3"
    )


def test_a_closed_stream_never_raises() -> None:
    out = FakeTTY()
    bar = ProgressBar(3, label="t", stream=out, min_interval=0.0, clock=FakeClock())
    out.close()
    bar.update(1, loss=0.5)
    bar.close()


def test_the_default_stream_is_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    with ProgressBar(1, label="t", width=1, clock=FakeClock()) as bar:
        bar.update()
    assert capsys.readouterr().err == "t [#] 1/1 100% in 0s\n"


def test_a_total_of_zero_is_complete_and_bad_arguments_are_rejected() -> None:
    out = io.StringIO()
    ProgressBar(0, label="z", stream=out, width=3, clock=FakeClock()).close()
    assert out.getvalue() == "z [###] 0/0 100% in 0s\n"
    with pytest.raises(
        ValueError, match=r"^ProgressBar: total must be an int >= 0 or None; got -1$"
    ):
        ProgressBar(-1, label="t")
    with pytest.raises(ValueError, match=r"^ProgressBar: width must be an int >= 1; got 0$"):
        ProgressBar(1, label="t", width=0)
    with pytest.raises(ValueError, match=r"^ProgressBar.update: n must be an int >= 0; got -2$"):
        ProgressBar(1, label="t", stream=io.StringIO()).update(-2)


def test_values_and_durations_are_compact() -> None:
    assert [format_value(v) for v in (0.123456, 1234.5678, 1e-5, 3, "a", True)] == [
        "0.1235",
        "1235",
        "1e-05",
        "3",
        "a",
        "True",
    ]
    assert [format_duration(s) for s in (0.4, 9.6, 125, 3725)] == ["0s", "10s", "2m05s", "1h02m"]
