"""Ray actors under corral supervision: connecting, creating actors, and their stand-ins.

**corral supervises, Ray places.** Every Ray actor corral creates is made with
``max_restarts=0`` in the ``corral`` namespace: Ray never restarts it. Instead a local corral
process, the *stand-in* (``RayActor``), owns it: its ``init`` creates the actor and waits
until it is up (the actor's constructor raising is the stand-in's ``StartError``), then keeps
one never-ending watch call open on it. When that call fails with Ray's ``ActorDiedError``
(the actor's process died: SIGKILL, OOM, an exception in ``__init__``) or
``ActorUnavailableError`` (its node is gone or unreachable), the stand-in exits with
``ActorLost``: a crash, for the ordinary ``Supervisor`` above it to apply its strategy and
intensity to, and its restart creates a fresh actor wherever Ray can place it. However the
stand-in ends (a normal stop, a crash, a kill), it kills its actor with ``ray.kill``: a
stopped tree leaves no corral actors in the cluster.

An actor class corral creates derives from ``WatchedActor``, which provides the watch method
(it also makes the class an asyncio actor in Ray's terms: its methods run one at a time on
the actor's event loop unless they await).

Everything Ray does here is awaited from the node's loop (an ``ObjectRef`` is awaitable);
the few synchronous Ray calls (``remote()`` submissions, ``ray.kill``, ``ray.get_actor``)
return without waiting for the actor. ``connect`` is the exception: it blocks while it joins
the cluster, so call it before the node starts (or in a thread).

This module and ``corral.cluster.serving`` are the only ones that manage Ray actors'
lifecycles; ``import ray`` happens in ``ray_module`` only, on first use.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Final

from corral._extras import require
from corral.errors import ActorLost
from corral.runtime.messages import ExitReason
from corral.runtime.process import Actor, Pid
from corral.runtime.supervisor import ChildSpec, Shutdown

__all__ = [
    "HANDLE",
    "NAMESPACE",
    "ActorSpec",
    "RayActor",
    "WatchedActor",
    "actor_spec",
    "connect",
    "connected",
    "create_actor",
    "disconnect",
    "kill_actor",
    "live_actors",
    "ray_module",
]

logger = logging.getLogger("corral.cluster")

NAMESPACE: Final = "corral"
"""The Ray namespace of every actor corral creates (and of the driver ``connect`` joins)."""

HANDLE: Final = ("corral.cluster", "handle")
"""The call a ``RayActor`` stand-in answers with its Ray actor handle."""

_WATCH = "corral_watch"
_NAME_POLL = 0.05


def ray_module() -> ModuleType:
    """The ``ray`` module, imported on first use (``MissingExtra`` naming ``corral[ray]``
    when it is not installed)."""
    return require("ray", extra="ray", by="corral's Ray backend (corral.cluster)")


def connected() -> bool:
    """Whether this process is connected to a Ray cluster (False when ray is not even
    imported: checking never imports it)."""
    import sys

    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


def connect(
    address: str | None = None,
    *,
    runtime_env: Mapping[str, object] | None = None,
    log_to_driver: bool = False,
) -> None:
    """Join the Ray cluster at ``address`` (``"auto"``, ``"HOST:PORT"``, ``"ray://..."``;
    None: Ray's own rule, ``RAY_ADDRESS`` or a new local cluster) in the ``corral``
    namespace. ``runtime_env`` is the job's (e.g. ``{"env_vars": {"PYTHONPATH": ...}}`` or
    ``{"py_modules": [...]}``, so that workers import the model code). Does nothing when
    already connected in that namespace; ``RuntimeError`` when connected in another.
    Blocks while it connects (seconds): call it before the node starts."""
    ray = ray_module()
    if ray.is_initialized():
        namespace = ray.get_runtime_context().namespace
        if namespace != NAMESPACE:
            raise RuntimeError(
                f"corral.cluster.connect: this process is connected to Ray in namespace "
                f"{namespace!r}; corral's actors live in {NAMESPACE!r}: ray.shutdown() first, "
                "or connect with corral.cluster.connect"
            )
        return
    ray.init(
        address=address,
        namespace=NAMESPACE,
        runtime_env=dict(runtime_env) if runtime_env else None,
        log_to_driver=log_to_driver,
        configure_logging=False,
    )


def disconnect() -> None:
    """Leave the cluster (``ray.shutdown()``); the actors this driver owns end with it."""
    if connected():
        ray_module().shutdown()


def _require_connected(where: str) -> ModuleType:
    ray = ray_module()
    if not ray.is_initialized():
        raise RuntimeError(
            f"{where}: not connected to a Ray cluster; call corral.cluster.connect(address) "
            "(or run with `corral serve --ray ADDRESS`) before starting it"
        )
    return ray


class WatchedActor:
    """Base class of the actor classes corral creates on Ray: provides the watch method a
    stand-in keeps open. Constructor arguments travel through Ray (its pickling: that is
    Ray's own plumbing); keep them plain data."""

    async def corral_watch(self) -> None:
        """Never returns: the stand-in's call that fails when this actor dies."""
        await asyncio.Event().wait()


@dataclass(frozen=True, kw_only=True)
class ActorSpec:
    """What a stand-in creates: an instance of ``cls`` (a ``WatchedActor`` subclass) made
    with ``args``/``kwargs``, named ``name`` in the ``corral`` namespace (None: unnamed),
    with Ray's placement options: ``num_cpus``, ``num_gpus``, ``resources``,
    ``scheduling_strategy`` (a Ray strategy object, e.g. a placement group's or a node
    affinity), ``runtime_env`` and any other ``ray_options`` (Ray's ``.options()`` keys;
    ``max_restarts``, ``namespace`` and ``name`` are corral's own).

    A stand-in names every actor it creates: ``name``, or when None the class's name with a
    unique suffix (``Echo-3f9a1c2e``), so ``live_actors`` lists them all."""

    cls: type[WatchedActor]
    args: tuple[object, ...] = ()
    kwargs: Mapping[str, object] = field(default_factory=dict)
    name: str | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: Mapping[str, float] | None = None
    scheduling_strategy: object = None
    runtime_env: Mapping[str, object] | None = None
    ray_options: Mapping[str, object] = field(default_factory=dict)


_OWN_OPTIONS = ("max_restarts", "namespace", "name", "get_if_exists", "lifetime")
_remote_classes: dict[type, Any] = {}


def _remote_class(ray: ModuleType, cls: type[WatchedActor]) -> Any:
    remote = _remote_classes.get(cls)
    if remote is None:
        remote = _remote_classes[cls] = ray.remote(cls)
    return remote


def create_actor(spec: ActorSpec, *, get_if_exists: bool = False) -> object:
    """Create the actor ``spec`` describes and return its handle (the actor may still be
    starting: await a call on it). ``max_restarts=0``: Ray never restarts it. A named actor
    whose name is taken: with ``get_if_exists``, the live one's handle; without, Ray's
    ``ValueError``. Needs ``connect`` first. Does not wait for the actor."""
    ray = _require_connected(f"creating Ray actor {spec.cls.__name__}")
    if not issubclass(spec.cls, WatchedActor):
        raise TypeError(
            f"corral.cluster: an actor class must derive from WatchedActor; got {spec.cls!r}"
        )
    for key in spec.ray_options:
        if key in _OWN_OPTIONS:
            raise ValueError(
                f"corral.cluster: ray_options cannot set {key!r}: corral sets it "
                f"(max_restarts=0, namespace {NAMESPACE!r}, the spec's name)"
            )
    options: dict[str, object] = {
        **spec.ray_options,
        "max_restarts": 0,
        "namespace": NAMESPACE,
        "num_cpus": spec.num_cpus,
        "num_gpus": spec.num_gpus,
    }
    if spec.name is not None:
        options["name"] = spec.name
        options["get_if_exists"] = get_if_exists
    if spec.resources:
        options["resources"] = dict(spec.resources)
    if spec.scheduling_strategy is not None:
        options["scheduling_strategy"] = spec.scheduling_strategy
    if spec.runtime_env:
        options["runtime_env"] = dict(spec.runtime_env)
    remote = _remote_class(ray, spec.cls).options(**options)
    return remote.remote(*spec.args, **dict(spec.kwargs))


def kill_actor(handle: object) -> None:
    """``ray.kill(handle)``; a dead actor or a lost connection is no error (logged at
    DEBUG). Does not wait for the actor to die."""
    try:
        ray_module().kill(handle, no_restart=True)
    except Exception as exc:
        logger.debug("corral.cluster: ray.kill(%r) failed: %r", handle, exc)


def live_actors() -> list[str]:
    """The names of the live actors in the ``corral`` namespace, sorted (every actor a
    stand-in creates is named: see ``ActorSpec``). Works without Ray's dashboard, which
    ``ray.util.state`` needs. Blocks for one query to the cluster (milliseconds)."""
    ray = _require_connected("corral.cluster.live_actors")
    named = ray.util.list_named_actors(all_namespaces=True)
    return sorted(a["name"] for a in named if a.get("namespace") == NAMESPACE)


class RayActor(Actor):
    """The stand-in: a corral process that owns one Ray actor (see the module docstring).

    ``init`` creates the actor and waits until its constructor has run (awaiting Ray, not
    blocking the loop); a constructor that raises, or an actor that cannot be placed before
    ``start_timeout`` seconds, fails ``init``. Then the process watches the actor: its
    death or its node's loss ends the process with ``ActorLost``. ``await
    pid.call(HANDLE)`` returns the handle (``RayActor.handle_of(pid)`` reads it without a
    call). However the process ends, the actor is killed.
    """

    def __init__(self, spec: ActorSpec, *, start_timeout: float | None = 60.0) -> None:
        self.spec = spec
        self.handle: Any = None
        self._start_timeout = start_timeout

    @classmethod
    def handle_of(cls, pid: Pid) -> object | None:
        """The handle of the actor the stand-in ``pid`` owns; None once it has ended."""
        stand_in = cls.running_as(pid)
        return None if stand_in is None else stand_in.handle

    @property
    def what(self) -> str:
        """The actor as logs and errors name it."""
        spec = self.spec
        return f"Ray actor {spec.name!r}" if spec.name else f"Ray actor {spec.cls.__name__}"

    async def init(self) -> None:
        ray = _require_connected(self.what)
        self.handle = handle = await self._create()
        self.pid.add_exit_callback(self._kill)
        try:
            await asyncio.wait_for(handle.__ray_ready__.remote(), self._start_timeout)
        except ray.exceptions.RayActorError as exc:
            raise ActorLost(self.what, _cause(exc), exc) from exc
        except TimeoutError:
            raise TimeoutError(
                f"{self.what}: not placed and started within {self._start_timeout} s "
                f"(num_cpus={self.spec.num_cpus}, num_gpus={self.spec.num_gpus}, "
                f"resources={self.spec.resources}): does the cluster have room for it?"
            ) from None
        watch = getattr(handle, _WATCH).remote()
        self.start_task(self._watch(ray, watch), name=f"corral watch {self.what}")

    async def _create(self) -> Any:
        if self.spec.name is None:
            unique = f"{self.spec.cls.__name__}-{uuid.uuid4().hex[:8]}"
            self.spec = dataclasses.replace(self.spec, name=unique)
        """Create the actor. A name still held by the previous incarnation (killed, but not
        yet dead in Ray's eyes: its node is being declared dead) is waited for, polling
        Ray every ``_NAME_POLL`` seconds up to ``start_timeout``."""
        loop = asyncio.get_running_loop()
        limit = self._start_timeout
        give_up = None if limit is None else loop.time() + limit
        while True:
            try:
                return create_actor(self.spec)
            except ray_module().exceptions.ActorAlreadyExistsError:
                if give_up is not None and loop.time() >= give_up:
                    raise ValueError(
                        f"{self.what}: the name is held by a live actor in namespace "
                        f"{NAMESPACE!r} (another driver's?) after {limit} s; names must be "
                        "unique in the cluster"
                    ) from None
            await asyncio.sleep(_NAME_POLL)

    async def _watch(self, ray: ModuleType, watch: object) -> None:
        errors = ray.exceptions
        try:
            await watch  # type: ignore[misc]
        except (errors.ActorDiedError, errors.ActorUnavailableError) as exc:
            raise ActorLost(self.what, _cause(exc), exc) from exc
        raise ActorLost(self.what, "its watch call returned", None)

    def handle_call(self, msg: object) -> object:
        if msg == HANDLE:
            return self.handle
        return super().handle_call(msg)

    def _kill(self, reason: ExitReason) -> None:
        if self.handle is not None:
            kill_actor(self.handle)


def _cause(exc: BaseException) -> str:
    """The first line of Ray's error, which says why the actor is gone."""
    name = type(exc).__name__
    text = str(exc).strip().splitlines()
    return f"{name}: {text[0]}" if text else name


def actor_spec(
    id: str,
    spec: ActorSpec,
    *,
    restart: str = "permanent",
    shutdown: Shutdown | None = None,
    start_timeout: float | None = 60.0,
) -> ChildSpec:
    """The ``ChildSpec`` of a stand-in for ``spec``, to put under a ``Supervisor``: each
    (re)start creates a fresh Ray actor; the supervisor's strategy and intensity apply to
    its deaths as to any child's."""
    return ChildSpec(
        id=id,
        start=lambda: RayActor(spec, start_timeout=start_timeout),
        restart=restart,  # type: ignore[arg-type]
        shutdown=shutdown,
    )
