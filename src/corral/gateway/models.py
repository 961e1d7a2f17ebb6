"""The models behind a gateway: one per serving, its readiness, metadata and repository
state (loaded or unloaded, declared versions, hot swap).

No HTTP here; the ASGI adapter calls these and turns ``HttpProblem`` into answers. Runs on
the node's loop.

**Readiness is the serving's truth**: a model is ready only while its serving runs, the
gateway has not unloaded it, and at least one partition of its current version is up
(``idle`` or ``busy`` in ``statistics()``; ``down`` means its supervisor is restarting it).

**Repository semantics** (Triton's model-repository extension):

- ``load`` with ``parameters.version`` naming a version the operator declared for the model
  (``Gateway(repository={"rank": {"2": "mymodels:load_v2"}})``) hot-swaps the serving to it
  (``serving.swap``: no request fails; a version that fails to load or warm up is rolled
  back and the answer carries the reason). Naming the current version, or no version,
  just loads the model again if it was unloaded. Nothing in a request is ever imported:
  a version that is not declared is refused.
- ``unload`` takes the model off the gateway: its ready endpoint says false and infer
  answers 503 until the next ``load``. The serving itself keeps running (its supervisor, not
  the gateway, owns it), so Python callers in the node are not affected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import numpy as np

from corral.errors import ServingNotRunning, SwapFailed
from corral.gateway.problems import BadRequest, HttpProblem, redact
from corral.gateway.protocol import OUTPUT_NAME
from corral.gateway.tensors import datatype_of
from corral.serving import InputSpec, ModelFactory, Serving
from corral.serving.contract import example_input

__all__ = ["Model", "ModelTable"]


class Model:
    """One serving as the gateway shows it."""

    def __init__(self, serving: Serving, versions: Mapping[str, ModelFactory]) -> None:
        self.serving = serving
        self.name = serving.name
        self.versions = dict(versions)
        self.loaded = True
        self.output: tuple[str, list[int]] | None = None  # datatype and shape of the last answer
        self._lock: asyncio.Lock | None = None

    def check_version(self, version: str | None) -> None:
        """404 unless ``version`` is None or the version the serving runs now."""
        current = self.serving.version
        if version is not None and version != current:
            raise HttpProblem(
                404,
                f"model '{self.name}' has no version '{version}' being served; it serves "
                f"version '{current}' (a version being retired by a swap is not addressable)",
            )

    def readiness(self) -> str | None:
        """None when ready, else why not."""
        if not self.loaded:
            return f"model '{self.name}' is unloaded"
        try:
            stats = self.serving.statistics()
        except ServingNotRunning as exc:
            return redact(str(exc))
        current = stats.version
        if any(p.version == current and p.state in ("idle", "busy") for p in stats.partitions):
            return None
        return f"model '{self.name}': every partition of version '{stats.version}' is down"

    def metadata(self) -> dict[str, object]:
        """The model metadata response (v2): one input, one output."""
        spec = self.serving.options.input_spec
        inputs: list[dict[str, object]]
        if spec is None:
            in_type = "FP32"
            inputs = [{"name": "input", "datatype": in_type, "shape": [-1]}]
        else:
            named = (
                [("input", spec)]
                if isinstance(spec, InputSpec)
                else list(spec.items())
                if isinstance(spec, dict)
                else [(f"input_{i}", one) for i, one in enumerate(spec)]
            )
            inputs = [
                {
                    "name": field,
                    "datatype": datatype_of(one.dtype) or "FP32",
                    "shape": [-1, *(-1 if d is None else d for d in one.shape)],
                }
                for field, one in named
            ]
            in_type = str(inputs[0]["datatype"])
        out_type, out_shape = self.output or (in_type, [-1])
        return {
            "name": self.name,
            "versions": [self.serving.version],
            "platform": f"corral_{self.serving.options.kind}",
            "inputs": inputs,
            "outputs": [{"name": OUTPUT_NAME, "datatype": out_type, "shape": out_shape}],
        }

    def saw_output(self, output: np.ndarray) -> None:
        """Remember the last answer's datatype and shape (with the batch dimension -1)."""
        datatype = datatype_of(output.dtype)
        if datatype is not None:
            self.output = (datatype, [-1, *output.shape[1:]])

    async def load(self, version: str | None) -> str:
        """The repository's ``load``: swap to ``version`` if it is another declared one,
        then take the model back on. Returns the version now served. Raises ``BadRequest``
        for an undeclared version, ``HttpProblem`` 500 with the rollback reason when the swap
        fails."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            current = self.serving.version
            if version is not None and version != current:
                factory = self.versions.get(version)
                if factory is None:
                    declared = ", ".join(sorted(self.versions)) or "none"
                    raise BadRequest(
                        "parameters.version",
                        f"a version declared for model '{self.name}' (declared: {declared})",
                        version,
                    )
                spec = self.serving.options.input_spec
                warmup = None if spec is None else example_input(spec)
                try:
                    await self.serving.swap(factory, version=version, warmup=warmup)
                except SwapFailed as exc:
                    raise HttpProblem(500, redact(str(exc))) from None
                except ServingNotRunning as exc:
                    raise HttpProblem(503, redact(str(exc))) from None
                self.output = None
            self.loaded = True
            return self.serving.version

    def unload(self) -> None:
        """The repository's ``unload`` (see the module docstring)."""
        self.loaded = False


class ModelTable:
    """The gateway's models by name."""

    def __init__(
        self,
        servings: Sequence[Serving],
        repository: Mapping[str, Mapping[str, ModelFactory]],
    ) -> None:
        self.models = {s.name: Model(s, repository.get(s.name, {})) for s in servings}

    def get(self, name: str) -> Model:
        """The model called ``name``; 404 if there is none."""
        model = self.models.get(name)
        if model is None:
            known = ", ".join(sorted(self.models))
            raise HttpProblem(404, f"no model named '{name}'; models here: {known}")
        return model

    def readiness(self) -> str | None:
        """None when every model is ready, else the first reason one is not."""
        for model in self.models.values():
            reason = model.readiness()
            if reason is not None:
                return reason
        return None
