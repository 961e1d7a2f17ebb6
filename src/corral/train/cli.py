"""``corral train``: data-parallel training of a model on ``.npz`` files, from the shell.

::

    corral train linear --data train.npz --eval test.npz --workers 2 --rounds 20 \\
        --model-arg lr=0.05 --checkpoint run/ckpt.npz --out run/params.npz

``MODEL`` is a ``'module:Class'`` path (imported from the current directory too, as
``python -m`` would) or a provided model's short name: ``linear``, ``logistic`` (columns
``x``, ``y``; ``features`` inferred from ``x``) or ``mf`` (columns ``user``, ``item``,
``rating``; ``users``, ``items`` and ``global_mean`` inferred from the data). The ``.npz``
files hold one array per column (``np.savez(path, x=..., y=...)``); ``--column NAME=ARRAY``
reads column ``NAME`` from another array. ``--model-arg KEY=VALUE`` values are JSON
(``0.05``, ``true``, ``[1, 2]``) or else plain strings.

A progress bar over the rounds (``corral._progress``) on stderr shows each round's training
loss and held-out metrics, from the trainer's ``("corral", "train", "round")`` events; the
summary goes to stdout. Exit status: 0 done; 1 the run failed (``TrainingFailed``); 2 bad
input, with a message naming the option; 130 interrupted (the checkpoint keeps the last
completed round: rerun with ``--resume``).

``--ray ADDRESS`` runs the workers as Ray actors on the cluster at ``ADDRESS`` instead of
local worker processes (``Trainer(backend="ray")``, ``--num-cpus`` each; see
``docs/cluster.md``); the driver joins the cluster before training starts, and a cluster it
cannot reach is exit status 1.

``add_parser`` and ``run`` are what ``corral.cli`` wires in.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from corral import logs, telemetry
from corral._progress import ProgressBar, format_value
from corral.errors import TrainingFailed

# numpy and the trainer are imported where they are used: `corral --help` builds this
# parser and must not pay for them.
if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from corral.train.model import Parameters
    from corral.train.trainer import Trainer, TrainResult

__all__ = ["MODELS", "add_parser", "run"]

Arrays: TypeAlias = "dict[str, npt.NDArray[np.generic]]"

MODELS = {
    "linear": ("corral.train:LinearRegression", ("x", "y")),
    "logistic": ("corral.train:LogisticRegression", ("x", "y")),
    "mf": ("corral.train:MatrixFactorization", ("user", "item", "rating")),
}
"""Short model names: their 'module:Class' and the columns they need."""

_PROG = "corral train"


class UsageError(Exception):
    """Bad command-line input: printed as ``corral train: <message>``, exit status 2."""


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an int >= {low}; got {text!r}")
        return value

    return parse


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``train`` command (see the module doc) to ``subparsers``."""
    p = subparsers.add_parser(
        "train",
        help="train a model on .npz data with supervised data-parallel workers",
        description="Train MODEL on the columns of an .npz file, sharded across worker "
        "processes whose parameters are averaged every round (see docs/training.md).",
    )
    logs.add_arguments(p, level="warning")
    p.add_argument("model", metavar="MODEL", help="'module:Class' or one of: linear, logistic, mf")
    p.add_argument("--data", required=True, metavar="FILE", help="training data (.npz)")
    p.add_argument("--eval", metavar="FILE", help="held-out data (.npz), evaluated every round")
    p.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="NAME=ARRAY",
        help="read column NAME from the files' array ARRAY (repeatable)",
    )
    p.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a model keyword argument; VALUE is JSON or a string (repeatable)",
    )
    p.add_argument("--workers", metavar="N", type=_int_at_least(1), default=2, help="default 2")
    p.add_argument(
        "--rounds", metavar="R", type=_int_at_least(1), default=10, help="total rounds; default 10"
    )
    p.add_argument(
        "--local-epochs", metavar="E", type=_int_at_least(1), default=1, help="per round; default 1"
    )
    p.add_argument("--sync", choices=("parameters", "gradients"), default="parameters")
    p.add_argument("--shard-by", metavar="COLUMN", help="keep rows with equal COLUMN in one shard")
    p.add_argument("--seed", metavar="S", type=_int_at_least(0), default=0, help="default 0")
    p.add_argument("--checkpoint", metavar="FILE", help="checkpoint (.npz) written every round")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    p.add_argument("--out", metavar="FILE", help="write the final parameters here (.npz)")
    p.add_argument(
        "--max-restarts", metavar="N", type=_int_at_least(0), default=3, help="in 5 s; default 3"
    )
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run the workers as Ray actors on the cluster at ADDRESS ('auto', HOST:PORT, "
        "ray://...; see docs/cluster.md)",
    )
    p.add_argument(
        "--num-cpus",
        metavar="N",
        type=float,
        default=1.0,
        help="with --ray: CPUs reserved for each worker; default 1",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@dataclass
class _Job:
    trainer: Trainer
    label: str
    rounds: int
    first: int
    out: str | None


def run(args: argparse.Namespace) -> int:
    """Run ``corral train`` with parsed ``args``; returns the exit status. Blocks for the
    whole run in its own event loop."""
    logs.configure(args.log_level, args.log_format)
    try:
        job = _prepare(args)
    except UsageError as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 2
    import asyncio

    from corral.runtime.loops import default_loop_factory

    try:
        if args.ray is not None:
            _connect(args.ray)
        with asyncio.Runner(loop_factory=default_loop_factory()) as runner:
            result, wall = runner.run(_fit(job, quiet=args.quiet))
    except ConnectionError as exc:
        print(f"{_PROG}: cannot reach the Ray cluster at --ray {args.ray}: {exc}", file=sys.stderr)
        return 1
    except TrainingFailed as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        where = (
            f"; rerun with --resume to continue from {args.checkpoint}" if args.checkpoint else ""
        )
        print(f"{_PROG}: interrupted{where}", file=sys.stderr)
        return 130
    if job.out is not None:
        _save(job.out, result.parameters)
    print(_summary(job, result, wall))
    return 0


# -- preparing: every input check, before any worker starts -------------------------------


def _prepare(args: argparse.Namespace) -> _Job:
    short = args.model in MODELS
    spec, needed = MODELS[args.model] if short else (args.model, ())
    if not short and ":" not in spec:
        raise UsageError(
            f"MODEL must be 'module:Class' or one of {', '.join(MODELS)}; got {spec!r}"
        )
    renames = _pairs(args.column, "--column", "NAME=ARRAY")
    data = _columns(_load_npz(args.data, "--data"), renames, needed, f"--data {args.data}")
    names = tuple(needed) or tuple(data)
    evaluation = None
    if args.eval is not None:
        evaluation = _columns(_load_npz(args.eval, "--eval"), renames, names, f"--eval {args.eval}")
    model_args = {**_inferred(args.model, data, evaluation), **_model_args(args.model_arg)}
    if not short and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # as `python -m` would; the workers run that way
    first = _first_round(args, spec, model_args)
    from corral.train.trainer import Trainer

    try:
        trainer = Trainer(
            data,
            eval_data=evaluation,
            model=spec,
            model_args=model_args,
            workers=args.workers,
            local_epochs=args.local_epochs,
            seed=args.seed,
            sync=args.sync,
            shard_by=args.shard_by,
            checkpoint=args.checkpoint,
            max_restarts=args.max_restarts,
            backend="ports" if args.ray is None else "ray",
            ray_address=args.ray,
            num_cpus=args.num_cpus,
        )
    except (ValueError, TypeError, ImportError, AttributeError) as exc:
        raise UsageError(f"cannot train {args.model}: {exc}") from None
    label = f"{args.model} ({spec})" if short else spec
    label += "".join(f" {k}={format_value(v)}" for k, v in model_args.items())
    return _Job(trainer, label, args.rounds, first, args.out)


def _load_npz(path: str, option: str) -> Arrays:
    import numpy as np

    if not Path(path).is_file():
        raise UsageError(f"{option}: no such file {path!r}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UsageError(f"{option}: cannot read {path!r} as .npz: {exc}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise UsageError(
            f"{option}: {path!r} holds one array, not named columns; "
            "write it with np.savez(path, x=..., y=...)"
        )
    with archive:
        return {name: archive[name] for name in archive.files}


def _pairs(items: list[str], option: str, shape: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not (sep and key.isidentifier()):
            raise UsageError(f"{option} must be {shape}; got {item!r}")
        if key in out:
            raise UsageError(f"{option} {key} is given twice")
        out[key] = value
    return out


def _columns(
    arrays: Arrays, renames: dict[str, str], needed: tuple[str, ...], where: str
) -> Arrays:
    for name, source in renames.items():
        if source not in arrays:
            raise UsageError(
                f"--column {name}={source}: {where} has no array {source!r}; "
                f"it has {', '.join(sorted(arrays))}"
            )
    columns = {**arrays, **{name: arrays[source] for name, source in renames.items()}}
    for name in needed:
        if name not in columns:
            raise UsageError(
                f"{where} has no column {name!r} (it has {', '.join(sorted(arrays))}); the "
                f"model needs {', '.join(needed)}: rename with --column {name}=ARRAY"
            )
    out = {name: columns[name] for name in needed} if needed else columns
    from corral.train.model import rows

    try:
        rows(out)
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}") from None
    return out


def _model_args(items: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, text in _pairs(items, "--model-arg", "KEY=VALUE").items():
        try:
            out[key] = json.loads(text)
        except ValueError:
            out[key] = text
    return out


def _inferred(model: str, data: Arrays, evaluation: Arrays | None) -> dict[str, object]:
    """The short-name models' sizes, from the data (``--model-arg`` overrides them)."""
    if model in ("linear", "logistic"):
        if data["x"].ndim != 2:
            raise UsageError(
                f"--data: column 'x' must be 2-D (rows x features); got {data['x'].shape}"
            )
        return {"features": int(data["x"].shape[1])}
    if model == "mf":
        import numpy as np

        both = [data] if evaluation is None else [data, evaluation]
        users = max(int(np.max(d["user"])) for d in both) + 1
        items = max(int(np.max(d["item"])) for d in both) + 1
        return {
            "users": users,
            "items": items,
            "global_mean": float(np.mean(np.asarray(data["rating"], dtype=np.float64))),
        }
    return {}


def _first_round(args: argparse.Namespace, spec: str, model_args: dict[str, object]) -> int:
    """The round the run starts at: 0, or after ``--checkpoint``'s round with ``--resume``."""
    if args.resume and args.checkpoint is None:
        raise UsageError("--resume needs --checkpoint FILE")
    if args.checkpoint is None or not Path(args.checkpoint).exists():
        if args.resume:
            print(
                f"{_PROG}: no checkpoint at {args.checkpoint} yet; starting at round 0",
                file=sys.stderr,
            )
        return 0
    if not args.resume:
        raise UsageError(
            f"--checkpoint {args.checkpoint} exists; pass --resume to continue from it, "
            "or remove it to start over"
        )
    from corral.train import checkpoint
    from corral.train.model import load_model

    try:
        saved = checkpoint.load(args.checkpoint)
        expected = load_model(spec, model_args).get_parameters()
    except (OSError, ValueError, KeyError, TypeError, ImportError, AttributeError) as exc:
        raise UsageError(f"--checkpoint {args.checkpoint}: cannot resume: {exc}") from None
    assert saved is not None  # the file exists
    if _shapes(saved.parameters) != _shapes(expected):
        raise UsageError(
            f"--checkpoint {args.checkpoint} holds parameters {_shapes(saved.parameters)}, "
            f"but {args.model} has {_shapes(expected)}"
        )
    return saved.round + 1


def _connect(address: str) -> None:
    """Join the Ray cluster before the node starts (it blocks for seconds)."""
    from corral.cluster.actors import connect

    connect(address)


def _shapes(params: Parameters) -> str:
    return ", ".join(f"{name} {tuple(params[name].shape)}" for name in sorted(params))


# -- running -------------------------------------------------------------------------------


async def _fit(job: _Job, *, quiet: bool) -> tuple[TrainResult, float]:
    """Start the workers, then show the bar (so its rate and eta count training only) while
    ``fit`` runs."""
    from corral import Node
    from corral.train.trainer import ROUND_EVENT

    trainer = job.trainer
    bar: ProgressBar | None = None

    def on_round(_e: object, m: dict[str, float], md: dict[str, object], _c: object) -> None:
        if bar is not None and md.get("trainer") == trainer.name:
            metrics = {k[5:]: v for k, v in m.items() if k.startswith("eval_") and k != "eval_loss"}
            bar.update(1, loss=m["loss"], **metrics)

    handler = f"corral-train-cli-{id(job)}"
    telemetry.attach(handler, ROUND_EVENT, on_round)  # type: ignore[arg-type]
    try:
        async with Node(), trainer:
            if not quiet:
                bar = ProgressBar(max(0, job.rounds - job.first), label="train", width=20)
            began = time.perf_counter()
            result = await trainer.fit(job.rounds)
            return result, time.perf_counter() - began
    finally:
        telemetry.detach(handler)
        if bar is not None:
            bar.close()


def _save(path: str, params: Parameters) -> None:
    import numpy as np

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as file:
        np.savez(file, **params)  # type: ignore[arg-type]
    os.replace(tmp, target)


def _summary(job: _Job, result: TrainResult, wall: float) -> str:
    history = result.history
    if history:
        ran = f"ran {history[0].round}-{history[-1].round}"
    else:
        ran = f"nothing to run: the checkpoint has round {result.rounds - 1}"
    samples = sum(s.samples for s in history)
    restarts = sum(s.restarts for s in history)
    lines = [
        ("model", job.label),
        ("workers", str(job.trainer.options.workers)),
        ("rounds", f"{result.rounds} ({ran})"),
        ("samples", f"{samples} in {wall:.2f}s, {restarts} worker restarts"),
    ]
    if history:
        lines.append(("train loss", format_value(history[-1].loss)))
    metrics = job.trainer.evaluate(result.parameters)
    if metrics:
        lines.append(("eval", " ".join(f"{k}={format_value(v)}" for k, v in metrics.items())))
    if job.out is not None:
        lines.append(("parameters", f"{job.out} ({_shapes(result.parameters)})"))
    if job.trainer.options.checkpoint is not None:
        lines.append(
            ("checkpoint", f"{job.trainer.options.checkpoint} (round {result.rounds - 1})")
        )
    return "\n".join(f"{key:<11} {value}" for key, value in lines)
