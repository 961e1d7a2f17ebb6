"""``corral train`` (corral.train.cli): end to end with real workers, resume, bad input."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pytest

from corral._progress import format_value
from corral.train import LinearRegression, round_seed, split, weighted_average
from corral.train.cli import add_parser, run
from corral.train.rounds import parse_reply, train_round

LR_ARGS = ["--model-arg", "lr=0.05", "--model-arg", "seed=1"]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="corral")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def _fedavg(
    data: dict[str, np.ndarray], rounds: int, seed: int
) -> tuple[dict[str, np.ndarray], float]:
    """What 2 workers compute: the final parameters and the last round's loss."""
    model = LinearRegression(4, lr=0.05, seed=1)
    params, loss = model.get_parameters(), 0.0
    for r in range(rounds):
        replies = [
            parse_reply(
                train_round(
                    model,
                    shard,
                    {"params": params, "state": None, "epochs": 1, "seed": round_seed(seed, r, k)},
                )
            )
            for k, shard in enumerate(split(data, 2))
        ]
        params = weighted_average([(x.params, x.samples) for x in replies])
        loss = sum(x.loss * x.samples for x in replies) / sum(x.samples for x in replies)
    return params, loss


@pytest.fixture
def files(regression: dict[str, np.ndarray], tmp_path: Path) -> tuple[str, str]:
    train, test = tmp_path / "train.npz", tmp_path / "test.npz"
    np.savez(train, x=regression["x"], y=regression["y"])
    np.savez(test, x=regression["x"][:50], y=regression["y"][:50])
    return str(train), str(test)


@pytest.mark.realtime
def test_train_linear_on_two_workers_writes_the_averaged_parameters_and_a_summary(
    files: tuple[str, str],
    regression: dict[str, np.ndarray],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    train, test = files
    out = str(tmp_path / "run" / "params.npz")
    argv = ["train", "linear", "--data", train, "--eval", test, "--rounds", "4", *LR_ARGS]
    assert run(_parse([*argv, "--seed", "5", "--out", out])) == 0
    expected, loss = _fedavg(regression, rounds=4, seed=5)
    with np.load(out) as saved:
        assert sorted(saved.files) == ["b", "w"]
        assert all(saved[k].tobytes() == expected[k].tobytes() for k in expected)
    model = LinearRegression(4)
    model.set_parameters(expected)
    metrics = model.evaluate({"x": regression["x"][:50], "y": regression["y"][:50]})
    stdout, stderr = capsys.readouterr()
    lines = stdout.splitlines()
    assert re.fullmatch(r"samples     812 in \d+\.\d\ds, 0 worker restarts", lines.pop(3))
    assert lines == [
        "model       linear (corral.train:LinearRegression) features=4 lr=0.05 seed=1",
        "workers     2",
        "rounds      4 (ran 0-3)",
        f"train loss  {format_value(loss)}",
        f"eval        loss={format_value(metrics['loss'])} rmse={format_value(metrics['rmse'])}",
        f"parameters  {out} (b (1,), w (4,))",
    ]
    # Not a terminal: a line at each 10% step crossed (25%, 50%, 75%) and the final one.
    progress = stderr.splitlines()
    assert [line.split("] ")[1].split(" ")[:2] for line in progress] == [
        ["1/4", "25%"],
        ["2/4", "50%"],
        ["3/4", "75%"],
        ["4/4", "100%"],
    ]
    assert progress[-1].endswith(
        f"  loss={format_value(loss)} rmse={format_value(metrics['rmse'])}"
    )


@pytest.mark.realtime
def test_resume_continues_from_the_checkpoint_to_the_uninterrupted_parameters(
    files: tuple[str, str],
    regression: dict[str, np.ndarray],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    train, _ = files
    ckpt, out = str(tmp_path / "ckpt.npz"), str(tmp_path / "params.npz")
    base = ["train", "linear", "--data", train, *LR_ARGS, "--checkpoint", ckpt, "--quiet"]
    assert run(_parse([*base, "--rounds", "2"])) == 0
    capsys.readouterr()
    assert run(_parse([*base, "--rounds", "4"])) == 2
    assert capsys.readouterr().err == (
        f"corral train: --checkpoint {ckpt} exists; pass --resume to continue from it, "
        "or remove it to start over\n"
    )
    assert run(_parse([*base, "--rounds", "4", "--resume", "--out", out])) == 0
    stdout = capsys.readouterr().out.splitlines()
    assert stdout[2] == "rounds      4 (ran 2-3)"
    assert stdout[-1] == f"checkpoint  {ckpt} (round 3)"
    expected, _ = _fedavg(regression, rounds=4, seed=0)
    with np.load(out) as saved:
        assert all(saved[k].tobytes() == expected[k].tobytes() for k in expected)
    assert run(_parse([*base, "--rounds", "4", "--resume"])) == 0
    assert "rounds      4 (nothing to run: the checkpoint has round 3)" in capsys.readouterr().out


@pytest.mark.realtime
def test_train_mf_infers_its_sizes_and_shards_by_item(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(2)
    path = tmp_path / "ratings.npz"
    np.savez(path, u=rng.integers(0, 7, 60), item=rng.integers(0, 5, 60), rating=np.full(60, 4.0))
    argv = ["train", "mf", "--data", str(path), "--column", "user=u", "--shard-by", "item"]
    assert run(_parse([*argv, "--rounds", "2", "--quiet"])) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        "model       mf (corral.train:MatrixFactorization) users=7 items=5 global_mean=4"
    )


def test_bad_input_fails_with_exit_status_2_naming_the_option(
    files: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, _ = files
    missing = str(tmp_path / "nope.npz")
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros((3, 2)), target=np.zeros(3))
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    cases = {
        ("linear", "--data", missing): f"--data: no such file {missing!r}",
        ("linear", "--data", str(single)): f"--data: {str(single)!r} holds one array, not "
        "named columns; write it with np.savez(path, x=..., y=...)",
        ("linear", "--data", train, "--eval", missing): f"--eval: no such file {missing!r}",
        ("linear", "--data", str(other)): f"--data {other} has no column 'y' (it has target, x); "
        "the model needs x, y: rename with --column y=ARRAY",
        ("linear", "--data", str(other), "--column", "y=label"): f"--column y=label: --data "
        f"{other} has no array 'label'; it has target, x",
        ("linear", "--data", train, "--column", "y"): "--column must be NAME=ARRAY; got 'y'",
        ("linear", "--data", train, "--model-arg", "lr"): "--model-arg must be KEY=VALUE; got 'lr'",
        ("linear", "--data", train, "--model-arg", "lr=1", "--model-arg", "lr=2"): "--model-arg "
        "lr is given twice",
        ("linear", "--data", train, "--model-arg", "lr=-1"): "cannot train linear: invalid "
        "options for model LinearRegression: lr must be a number > 0; got -1",
        ("linear", "--data", train, "--model-arg", "lrate=0.1"): "cannot train linear: "
        "LinearRegression.__init__() got an unexpected keyword argument 'lrate'",
        ("linear", "--data", train, "--shard-by", "z"): "cannot train linear: invalid options "
        "for trainer 'trainer': shard_by must be a column of the data (x, y); got 'z'",
        ("forest", "--data", train): "MODEL must be 'module:Class' or one of linear, logistic, "
        "mf; got 'forest'",
        ("linear", "--data", train, "--resume"): "--resume needs --checkpoint FILE",
    }
    for argv, message in cases.items():
        assert run(_parse(["train", *argv])) == 2, argv
        assert capsys.readouterr().err == f"corral train: {message}\n"


def test_a_checkpoint_of_another_model_is_refused(
    files: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, _ = files
    ckpt = tmp_path / "ckpt.npz"
    np.savez(ckpt, **{"round": np.array(0), "param/w": np.zeros(3), "param/b": np.zeros(1)})
    assert (
        run(_parse(["train", "linear", "--data", train, "--checkpoint", str(ckpt), "--resume"]))
        == 2
    )
    assert capsys.readouterr().err == (
        f"corral train: --checkpoint {ckpt} holds parameters b (1,), w (3,), "
        "but linear has b (1,), w (4,)\n"
    )


def test_counts_are_checked_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parse(["train", "linear", "--data", "d.npz", "--workers", "0"])
    assert exit_info.value.code == 2
    assert "argument --workers: must be an int >= 1; got '0'" in capsys.readouterr().err
