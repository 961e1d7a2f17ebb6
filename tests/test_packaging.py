"""``pip install corral`` works: the wheel installs in a fresh venv with only its core
dependencies and its commands run; a missing optional engine names its extra
(``corral._extras.require``); ``corral --help`` and ``corral version`` stay light."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

import corral
from corral import Node
from corral._extras import MissingExtra, require
from corral.errors import StartError
from corral.pipeline import Pipeline

ROOT = Path(__file__).resolve().parent.parent

# -- corral._extras.require ------------------------------------------------------------------


def test_require_returns_the_module_when_it_is_installed() -> None:
    assert require("json", extra="json", by="a test") is json


def test_require_names_the_extra_to_install_when_the_module_is_missing() -> None:
    with pytest.raises(MissingExtra) as info:
        require("corral_no_such_engine.sub", extra="redis", by="corral's redis producer")
    assert str(info.value) == (
        "corral's redis producer needs corral_no_such_engine: pip install 'corral[redis]'"
    )
    assert isinstance(info.value, ModuleNotFoundError)
    assert (info.value.name, info.value.extra) == ("corral_no_such_engine", "redis")


def test_require_says_which_dependency_an_installed_engine_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "corral_broken_engine.py").write_text("import corral_absent_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtra) as info:
        require("corral_broken_engine", extra="jax", by="corral's JaxModel")
    assert str(info.value) == (
        "corral's JaxModel needs corral_broken_engine: pip install 'corral[jax]' "
        "(No module named 'corral_absent_dependency')"
    )
    assert info.value.name == "corral_absent_dependency"


# -- every optional engine's import site, with the engine hidden ------------------------------


def _torch_trainer() -> None:
    from corral.train.torch_model import mlp

    mlp(2, 4, 2)


def _torch_adapter() -> None:
    from corral.serving.adapters.torch import TorchModel

    TorchModel(object())


def _jax_adapter() -> None:
    from corral.serving.adapters.jax import JaxModel

    JaxModel(lambda x: x)


def _onnx_adapter() -> None:
    from corral.serving.adapters.onnx import OnnxModel

    OnnxModel("model.onnx")


def _stream_writer() -> None:
    from corral.pipeline.producers.redis_writer import StreamWriter

    async def enter() -> None:
        async with StreamWriter("redis://127.0.0.1:1/0", "events"):
            pass

    asyncio.run(enter())


@pytest.mark.parametrize(
    ("use", "hidden", "message"),
    [
        (_torch_trainer, ("torch",), "corral's torch trainer model needs torch"),
        (_torch_adapter, ("torch",), "corral's TorchModel needs torch"),
        (_jax_adapter, ("jax", "jax.numpy"), "corral's JaxModel needs jax"),
        (_onnx_adapter, ("onnxruntime",), "corral's OnnxModel needs onnxruntime"),
        (_stream_writer, ("redis",), "corral's StreamWriter needs redis"),
    ],
    ids=["train.torch_model", "TorchModel", "JaxModel", "OnnxModel", "StreamWriter"],
)
def test_a_feature_whose_engine_is_missing_names_the_pip_install_line(
    use: Callable[[], None],
    hidden: tuple[str, ...],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in hidden:  # None in sys.modules: `import name` fails as if not installed
        monkeypatch.setitem(sys.modules, name, None)
    extra = {"onnxruntime": "onnx"}.get(hidden[0], hidden[0])
    with pytest.raises(MissingExtra) as info:
        use()
    assert str(info.value) == f"{message}: pip install 'corral[{extra}]'"


@pytest.mark.parametrize(
    ("module", "hidden", "options", "needs"),
    [
        (
            "redis_streams",
            "redis",
            {"url": "redis://127.0.0.1:1/0", "stream": "s", "group": "g"},
            "redis_streams producer (pipeline 'orders' 0) needs redis: pip install 'corral[redis]'",
        ),
        (
            "rabbitmq",
            "aio_pika",
            {"url": "amqp://127.0.0.1:1/", "queue": "q"},
            "RabbitMQ producer (pipeline 'orders' producer 0, queue 'q') needs aio_pika: "
            "pip install 'corral[rabbitmq]'",
        ),
        (
            "nats",
            "nats",
            {"url": "nats://127.0.0.1:1", "stream": "s", "durable": "d"},
            "NATS producer (pipeline 'orders' producer 0, stream 's' consumer 'd') needs "
            "nats: pip install 'corral[nats]'",
        ),
    ],
    ids=["redis", "rabbitmq", "nats"],
)
async def test_a_producer_whose_client_is_missing_fails_the_start_naming_the_extra(
    module: str,
    hidden: str,
    options: dict[str, object],
    needs: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, hidden, None)
    orders = Pipeline(name="orders", producer={"module": module, "options": options})
    async with Node() as node:
        with pytest.raises(StartError) as info:
            await orders.start(node)
    # The stage's error, nested in the supervisors' StartErrors (whose texts quote it).
    assert needs in str(info.value).replace("\\", "")


# -- the command line stays light -------------------------------------------------------------


def test_corral_help_and_version_load_no_numpy_asyncio_or_optional_engine() -> None:
    heavy = ("numpy", "msgpack", "asyncio", "uvloop", "torch", "jax", "onnxruntime")
    heavy += ("redis", "aio_pika", "nats", "aiokafka", "ray", "starlette", "uvicorn")
    code = f"""
import contextlib, io, sys
from corral.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0, exc.code
    assert main(["version"]) == 0
assert "supervision" in out.getvalue(), out.getvalue()
print(sorted({{m.partition(".")[0] for m in sys.modules}} & set({heavy!r})))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# -- the wheel, installed in a fresh venv ---------------------------------------------------


def _run(
    args: list[str | Path], *, cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _build_wheel(tmp: Path) -> Path:
    """``pip wheel`` of a copy of the sources (no build/ or egg-info in the checkout)."""
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(ROOT / "src", source / "src", ignore=ignore)
    dist = tmp / "dist"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    built = _run([*pip_wheel, "-w", dist, source], cwd=tmp)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = dist.glob("corral-*.whl")
    return wheel


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_wheel_installs_with_numpy_and_msgpack_only_and_its_commands_run(
    tmp_path: Path,
) -> None:
    wheel = _build_wheel(tmp_path)
    shipped = set(zipfile.ZipFile(wheel).namelist())
    data = [ROOT / "src" / "corral" / "py.typed"]
    for pattern in ("*.erl", "*.ex"):
        data += (ROOT / "src" / "corral" / "port" / "clients").glob(pattern)
    for path in data:
        assert path.relative_to(ROOT / "src").as_posix() in shipped, path

    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    installed = _run([python, "-m", "pip", "install", "-q", wheel], cwd=tmp_path, timeout=240)
    assert installed.returncode == 0, (
        "pip could not install the wheel with its dependencies (numpy, msgpack); this test "
        f"needs PyPI or pip's cache:\n{installed.stderr}"
    )
    listed = _run([python, "-m", "pip", "list", "--format=json"], cwd=tmp_path)
    names = {p["name"].lower() for p in json.loads(listed.stdout)} - {"pip", "setuptools"}
    assert names == {"corral", "msgpack", "numpy"}

    helped = _run([bin_dir / "corral", "--help"], cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "supervision" in helped.stdout
    version = _run([bin_dir / "corral", "version"], cwd=tmp_path)
    assert (version.returncode, version.stdout) == (0, f"{corral.__version__}\n"), version.stderr
    storm = _run([bin_dir / "corral", "supervision", "--quick"], cwd=tmp_path)
    assert storm.returncode == 0, storm.stdout + storm.stderr
    assert "30/30 events scored, 0 lost" in storm.stdout

    # The demo's data is not an extra: the command says how to get it.
    demo = _run([bin_dir / "corral", "demo", "--quick"], cwd=tmp_path)
    assert demo.returncode == 1, demo.stdout + demo.stderr
    assert "pip install --no-deps recbole==1.2.1" in demo.stderr

    features = """
import asyncio
from corral.pipeline.producers.redis_writer import StreamWriter
from corral.serving.adapters.torch import TorchModel
try:
    TorchModel(object())
except ImportError as exc:
    print(exc)
try:
    asyncio.run(StreamWriter("redis://127.0.0.1:1/0", "events").__aenter__())
except ImportError as exc:
    print(exc)
"""
    tried = _run([python, "-c", features], cwd=tmp_path)
    assert tried.returncode == 0, tried.stderr
    assert tried.stdout.splitlines() == [
        "corral's TorchModel needs torch: pip install 'corral[torch]'",
        "corral's StreamWriter needs redis: pip install 'corral[redis]'",
    ]


@pytest.mark.parametrize(
    ("module", "hidden"),
    [("corral.gateway.app", "starlette"), ("corral.gateway.server", "uvicorn")],
)
def test_the_gateway_without_its_extra_names_the_pip_install_line(
    module: str, hidden: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    monkeypatch.setitem(sys.modules, hidden, None)  # as if not installed
    monkeypatch.delitem(sys.modules, module, raising=False)  # imported afresh, then restored
    with pytest.raises(MissingExtra) as info:
        importlib.import_module(module)
    assert str(info.value) == (f"corral's HTTP gateway needs {hidden}: pip install 'corral[http]'")
