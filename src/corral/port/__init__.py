"""Ports: supervised worker OS processes reached over a length-prefixed wire.

See ``corral.port.port`` (the parent side), ``corral.port.worker`` (the worker side, run as
``python -m corral.port MODULE:HANDLER``), ``corral.port.codec`` (msgpack with numpy arrays)
and ``corral.port.frames``.
"""

from corral.port.codec import Codec
from corral.port.frames import FrameDecoder
from corral.port.port import Port, PortOptions
from corral.port.worker import Handler

__all__ = ["Codec", "FrameDecoder", "Handler", "Port", "PortOptions"]
