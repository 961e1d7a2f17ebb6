"""Ports: supervised worker OS processes reached over a length-prefixed wire.

The parent side: ``corral.port.port`` (``Port``, the actor), ``corral.port.options``
(``PortOptions``), ``corral.port.worker_process`` (``WorkerProcess``, the handle on one
worker OS process) and ``corral.port.spares`` (warm spares). The worker side, run as
``python -m corral.port MODULE:HANDLER``: ``corral.port.worker`` (the entry point),
``corral.port.wire``, ``corral.port.hooks`` (the handler), ``corral.port.serve`` (the serve
loop) and its two dialects, ``corral.port.msgpack_dialect`` and ``corral.port.erlang``.
Shared: ``corral.port.codec`` (msgpack with numpy arrays), ``corral.port.frames`` and
``corral.port.protocol``. docs/ports.md draws the whole. Names load lazily, so a worker's
start-up imports only what it uses.
"""

from typing import TYPE_CHECKING

from corral._lazy import lazy_exports

if TYPE_CHECKING:
    from corral.port.codec import Codec
    from corral.port.frames import FrameDecoder
    from corral.port.hooks import Handler
    from corral.port.port import Port, PortOptions
    from corral.port.worker import clients_dir

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Codec": "corral.port.codec",
        "FrameDecoder": "corral.port.frames",
        "Handler": "corral.port.hooks",
        "Port": "corral.port.port",
        "PortOptions": "corral.port.port",
        "clients_dir": "corral.port.worker",
    },
)

__all__ = ["Codec", "FrameDecoder", "Handler", "Port", "PortOptions", "clients_dir"]
