"""``kind="ray"`` serving partitions: each partition is one Ray actor, one Ray call per batch.

``partition_spec`` (``corral.serving.partitions``) puts a ``RayPartition`` under the
serving's partitions supervisor for each partition: a ``RayActor`` stand-in whose actor, a
``PartitionActor``, loads the model from its ``"module:attr"`` factory in a Ray worker
process wherever Ray places it (``num_cpus`` / ``num_gpus`` / ``ray_options``), with the
driver's ``sys.path`` entries on its ``PYTHONPATH`` (``inherit_sys_path``) and whatever
``runtime_env`` the options add. Its runner, ``RayRunner``, sends each batch as one Ray call.

The batch and the output cross as bytes in corral's msgpack codec (``corral.port.codec``:
numpy arrays as typed extensions; dicts, lists and tuples of them for structured batches),
never pickled; a large argument goes through Ray's object store as Ray decides. A model error
comes back encoded too and fails only its batch (``ActorCallError``, with the worker's
traceback). The actor's death, or its node's loss, mid-batch is the batch's crash (retried
on another partition, as for a port) and ends the stand-in with ``ActorLost``, which its
supervisor restarts.

Partition actors are named ``serving:<serving>-v<version>-p<index>`` in the ``corral``
namespace: ``serving_actors(name)`` lists a serving's from any driver connected to the
cluster.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import Any, Final

from corral.cluster.actors import (
    ActorSpec,
    RayActor,
    WatchedActor,
    live_actors,
    ray_module,
)
from corral.errors import ActorCallError, ActorLost
from corral.port.codec import Codec
from corral.runtime.messages import ExitReason
from corral.runtime.process import Pid
from corral.runtime.supervisor import ChildSpec
from corral.serving.adapters import AsyncFunctionModel, Model
from corral.serving.factory import FactorySpec, load_spec
from corral.serving.runners import Crashed, ModelFailed, Runner, Spawn

__all__ = [
    "PartitionActor",
    "RayPartition",
    "RayRunner",
    "actor_name",
    "ray_partition_spec",
    "serving_actors",
]

PREFIX: Final = "serving:"
_OK = 0
_ERROR = 1
_TUPLE = 2


def actor_name(label: str) -> str:
    """The Ray actor name of the partition labelled ``label`` (``rank-v1-p0``)."""
    return PREFIX + label


def serving_actors(serving: str) -> list[str]:
    """The names of the live partition actors of the serving ``serving`` in the cluster,
    whichever driver runs it (``serving:rank-v1-p0``, ...). Blocks for one query."""
    start = f"{PREFIX}{serving}-v"
    return [name for name in live_actors() if name.startswith(start)]


def encode(codec: Codec, value: object) -> bytes:
    """A batch or an output as bytes: msgpack, a top-level tuple kept a tuple."""
    if isinstance(value, tuple):
        return codec.dumps([_TUPLE, list(value)])
    return codec.dumps([_OK, value])


def decode(codec: Codec, data: bytes) -> tuple[bool, object]:
    """``(True, value)``, or ``(False, [type, message, traceback])`` for a model error."""
    message = codec.loads(data)
    if not (isinstance(message, list) and len(message) == 2):
        raise TypeError(f"expected a [tag, value] message; got {message!r}")
    tag, value = message
    if tag == _TUPLE and isinstance(value, list):
        return True, tuple(value)
    return tag != _ERROR, value


class PartitionActor(WatchedActor):
    """The Ray actor of one ``"ray"`` partition: loads the model in its constructor (in the
    Ray worker process), then runs one encoded batch per ``run`` call."""

    def __init__(self, spec: FactorySpec, device: str | None, label: str) -> None:
        path, args, kwargs = spec
        model = load_spec(path, args, kwargs, device=device)
        if isinstance(model, AsyncFunctionModel):
            raise TypeError(
                f"serving partition {label}: {path} gave an async model; 'ray' partitions "
                "run plain models"
            )
        self._model: Model = model
        self._codec = Codec(where=f"ray partition {label}")

    def where(self) -> tuple[int, str]:
        """The actor's OS process id and Ray node id (hex)."""
        import os

        return os.getpid(), ray_module().get_runtime_context().get_node_id()

    def run(self, data: bytes) -> bytes:
        """Decode the batch, run the model, encode its output (or its error)."""
        codec = self._codec
        _, batch = decode(codec, data)
        try:
            out = self._model.run(batch)
            return encode(codec, out)
        except Exception as exc:
            tb = traceback.format_exc()
            return codec.dumps([_ERROR, [type(exc).__qualname__, str(exc), tb]])

    def __del__(self) -> None:
        model = getattr(self, "_model", None)
        if model is not None:
            model.close()


class RayPartition(RayActor):
    """The stand-in of one ``"ray"`` partition; once started it knows its actor's OS
    process id (``os_pid``) and Ray node (``node_id``, hex)."""

    def __init__(self, spec: ActorSpec, label: str) -> None:
        super().__init__(spec)
        self.label = label
        self.os_pid: int | None = None
        self.node_id: str | None = None

    async def init(self) -> None:
        await super().init()
        self.os_pid, self.node_id = await self.handle.where.remote()


class RayRunner(Runner):
    """Runs each batch as one ``PartitionActor.run`` call, awaited in a task that ``spawn``
    owns. The stand-in's exit (its actor lost) reports the running batch as crashed."""

    def __init__(self, pid: Pid, spawn: Spawn) -> None:
        super().__init__(pid)
        stand_in = RayPartition.running_as(pid)
        if stand_in is None:
            raise TypeError(f"RayRunner: {pid} is not a RayPartition ({pid.actor_type})")
        self._spawn = spawn
        self._handle: Any = stand_in.handle
        self._label = stand_in.label
        self._os_pid = stand_in.os_pid
        self._codec = Codec(where=f"ray partition {stand_in.label}")
        pid.add_exit_callback(self._exited)

    @property
    def os_pid(self) -> int | None:
        """The OS process id of the actor (on whichever machine it runs)."""
        return self._os_pid

    def _start(self, batch: object) -> None:
        try:
            data = encode(self._codec, batch)
        except TypeError as exc:
            self._loop.call_soon(self._finish, ModelFailed(exc))
            return
        self._spawn(self._call(self._handle.run.remote(data)))

    async def _call(self, ref: Any) -> None:
        errors = ray_module().exceptions
        outcome: object
        try:
            reply = await ref
        except errors.RayActorError as exc:
            lost = ActorLost(f"Ray actor {actor_name(self._label)!r}", _first_line(exc), exc)
            outcome = Crashed(lost)
            if self.pid.alive:
                self.pid.exit(lost)  # the watch would tell it too, a moment later
        except Exception as exc:  # Ray could not run the call: this batch fails alone
            outcome = ModelFailed(exc)
        else:
            try:
                ok, value = decode(self._codec, reply)
            except Exception as exc:
                outcome = ModelFailed(exc)
            else:
                if ok:
                    outcome = value
                else:
                    kind, message, tb = (str(v) for v in value)  # type: ignore[attr-defined]
                    error = ActorCallError(actor_name(self._label), kind, message, tb)
                    outcome = ModelFailed(error)
        self._finish(outcome)

    def _exited(self, reason: ExitReason) -> None:
        if isinstance(reason, ActorLost):
            self._finish(Crashed(reason))
        else:
            from corral.errors import ProcessExited

            self._finish(Crashed(ProcessExited(self.pid, reason)))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def ray_partition_spec(
    spec: FactorySpec,
    *,
    index: int,
    label: str,
    device: str | None,
    num_cpus: float,
    num_gpus: float,
    ray_options: Mapping[str, object],
    pythonpath: str,
) -> ChildSpec:
    """The child spec of ``"ray"`` partition ``index``: a stand-in creating a
    ``PartitionActor`` named ``actor_name(label)`` that loads ``spec``. ``pythonpath``
    (may be empty) goes first on the actor's ``PYTHONPATH``; ``ray_options`` are Ray's
    ``.options()`` (``resources``, ``scheduling_strategy``, ``runtime_env``, ...)."""
    options = dict(ray_options)
    runtime_env = dict(options.pop("runtime_env", None) or {})  # type: ignore[call-overload]
    if pythonpath:
        env = dict(runtime_env.get("env_vars") or {})
        own = env.get("PYTHONPATH")
        env["PYTHONPATH"] = pythonpath if not own else f"{own}:{pythonpath}"
        runtime_env["env_vars"] = env
    resources = options.pop("resources", None)
    strategy = options.pop("scheduling_strategy", None)
    actor = ActorSpec(
        cls=PartitionActor,
        args=(spec, device, label),
        name=actor_name(label),
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        resources=resources,  # type: ignore[arg-type]
        scheduling_strategy=strategy,
        runtime_env=runtime_env or None,
        ray_options=options,
    )
    return ChildSpec(id=f"partition-{index}", start=lambda: RayPartition(actor, label))
