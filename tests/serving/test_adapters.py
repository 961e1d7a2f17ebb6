"""Every model adapter on a small real model, inline and through a serving."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path

import numpy as np
import pytest

from corral import Node
from corral.serving import FunctionModel, Model, Serving, adapt
from corral.serving.adapters.onnx import OnnxModel
from corral.serving.adapters.sklearn import SklearnModel
from corral.serving.adapters.torch import TorchModel


async def served(factory: object, rows: np.ndarray, **options: object) -> np.ndarray:
    serving = Serving(factory, name="adapted", batch_size=8, batch_timeout=0.001, **options)  # type: ignore[arg-type]
    async with Node([serving.child_spec()]):
        results = await asyncio.gather(*[serving.run(row) for row in rows])
    return np.stack([r.output for r in results])


def test_plain_callable_is_a_function_model() -> None:
    model = adapt(lambda b: b.sum(axis=1))
    assert isinstance(model, FunctionModel)
    assert model.run(np.ones((2, 3))).tolist() == [3.0, 3.0]


def test_a_model_is_used_as_is_and_junk_is_refused() -> None:
    model = FunctionModel(np.negative)
    assert adapt(model) is model
    with pytest.raises(TypeError, match="serving model: cannot adapt 42"):
        adapt(42)


def iris_model(method: str = "predict") -> tuple[SklearnModel, np.ndarray]:
    datasets = pytest.importorskip("sklearn.datasets")
    linear = pytest.importorskip("sklearn.linear_model")
    x, y = datasets.load_iris(return_X_y=True)
    estimator = linear.LogisticRegression(max_iter=500).fit(x, y)
    return SklearnModel(estimator, method=method), x


async def test_sklearn_estimator_predict_through_a_serving() -> None:
    model, x = iris_model()
    rows = x[::10]
    expected = model.estimator.predict(rows)  # type: ignore[attr-defined]
    assert isinstance(adapt(model.estimator), SklearnModel)
    got = await served(lambda: model.estimator, rows)
    assert got.tolist() == expected.tolist()
    assert (got == np.array([0] * 5 + [1] * 5 + [2] * 5)).mean() > 0.9


async def test_sklearn_predict_proba() -> None:
    model, x = iris_model("predict_proba")
    got = await served(lambda: model, x[:5])
    assert got.shape == (5, 3)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)


def test_sklearn_method_is_checked() -> None:
    with pytest.raises(ValueError, match="SklearnModel: method must be one of predict"):
        SklearnModel(object(), method="fit")
    with pytest.raises(TypeError, match="SklearnModel: object has no predict_proba"):
        SklearnModel(object(), method="predict_proba")


def small_torch_module() -> object:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


async def test_torch_module_in_inference_mode_through_a_serving() -> None:
    torch = pytest.importorskip("torch")
    module = small_torch_module()
    rows = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(rows)).numpy()  # type: ignore[operator]
    model = adapt(module, device="cpu")
    assert isinstance(model, TorchModel) and str(model.device) == "cpu"
    got = await served(lambda: module, rows, device="cpu")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # inline, on a read-only array (as ports deliver them)
    ro = rows.copy()
    ro.flags.writeable = False
    np.testing.assert_allclose(model.run(ro), expected, rtol=1e-5, atol=1e-6)


def test_torch_model_refuses_other_objects() -> None:
    pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"TorchModel: module must be a torch\.nn\.Module"):
        TorchModel(object())


async def test_onnx_model_exported_from_torch(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    module = small_torch_module()
    module.eval()  # type: ignore[attr-defined]
    path = str(tmp_path / "small.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own deprecation notices
        torch.onnx.export(
            module,
            (torch.zeros(2, 4),),
            path,
            input_names=["x"],
            output_names=["y"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            dynamo=True,
            verbose=False,
        )
    rows = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(rows)).numpy()  # type: ignore[operator]
    from_path = OnnxModel(path)
    assert (from_path.input_name, from_path.output) == ("x", "y")
    np.testing.assert_allclose(from_path.run(rows), expected, rtol=1e-4, atol=1e-5)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert isinstance(adapt(session), OnnxModel)
    got = await served(lambda: session, rows)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_jax_jit_function() -> None:
    jax = pytest.importorskip("jax")
    from corral.serving.adapters.jax import JaxModel

    model = JaxModel(jax.jit(lambda x: x * 2))
    assert model.run(np.ones((2, 2), np.float32)).tolist() == [[2, 2], [2, 2]]


def test_model_base_close_is_harmless() -> None:
    Model().close()
    with pytest.raises(NotImplementedError):
        Model().run(np.ones(1))
