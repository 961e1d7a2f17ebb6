"""The same servings, workers and trainers placed on a Ray cluster (``corral[ray]``).

**corral supervises, Ray places**: each Ray actor corral creates (``max_restarts=0``, in
the ``corral`` namespace) is owned by a local stand-in process (``RayActor``) that exits
when the actor dies or its node is lost, so the ordinary ``Supervisor`` restarts it, and
kills the actor however it ends. ``connect(address)`` joins a cluster. See docs/cluster.md.

Nothing here imports ``ray`` until it is used: ``import corral.cluster`` is cheap.
"""

from typing import TYPE_CHECKING

from corral._lazy import lazy_exports

if TYPE_CHECKING:
    from corral.cluster.actors import (
        HANDLE,
        NAMESPACE,
        ActorSpec,
        RayActor,
        WatchedActor,
        actor_spec,
        connect,
        connected,
        create_actor,
        disconnect,
        kill_actor,
        live_actors,
        ray_module,
    )
    from corral.cluster.serving import RayPartition, serving_actors

_ACTORS = (
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
)

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(_ACTORS, "corral.cluster.actors"),
        "RayPartition": "corral.cluster.serving",
        "serving_actors": "corral.cluster.serving",
    },
)

__all__ = [
    "HANDLE",
    "NAMESPACE",
    "ActorSpec",
    "RayActor",
    "RayPartition",
    "WatchedActor",
    "actor_spec",
    "connect",
    "connected",
    "create_actor",
    "disconnect",
    "kill_actor",
    "live_actors",
    "ray_module",
    "serving_actors",
]
