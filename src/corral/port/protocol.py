"""The messages a port and its worker exchange (corral mode).

Every frame holds one msgpack array whose first element is the kind:

=============  =========  ==========================================================
kind           direction  layout
=============  =========  ==========================================================
``INIT``       → worker   ``[INIT, version, args]``: run ``setup(**args)``
``READY``      ← worker   ``[READY, version, {"pid": int}]``: setup finished
``INIT_FAILED`` ← worker  ``[INIT_FAILED, version, error]``: setup raised; it exits
``CALL``       → worker   ``[CALL, id, msg]``
``REPLY``      ← worker   ``[REPLY, id, result]``
``ERROR``      ← worker   ``[ERROR, id, error]``: the handler raised
``CAST``       → worker   ``[CAST, msg]``: no reply
``STOP``       → worker   ``[STOP]``: finish what is in flight, run ``terminate``, exit 0
=============  =========  ==========================================================

``error`` is ``{"type": qualified class name, "message": str, "traceback": str}``. Ids are
ints chosen by the port; replies may come in any order. A worker that gets a frame it cannot
decode, or a kind it does not know, writes why to stderr and exits with status 3.
"""

from __future__ import annotations

import traceback
from typing import Final

__all__ = [
    "CALL",
    "CAST",
    "ERROR",
    "EXIT_PROTOCOL_ERROR",
    "EXIT_SETUP_FAILED",
    "INIT",
    "INIT_FAILED",
    "PROTOCOL_VERSION",
    "READY",
    "REPLY",
    "STOP",
    "describe_exception",
]

PROTOCOL_VERSION: Final = 1

INIT: Final = 1
READY: Final = 2
INIT_FAILED: Final = 3
CALL: Final = 4
REPLY: Final = 5
ERROR: Final = 6
CAST: Final = 7
STOP: Final = 8

EXIT_SETUP_FAILED: Final = 2
"""Worker exit status after its handler's import or setup failed."""
EXIT_PROTOCOL_ERROR: Final = 3
"""Worker exit status after it received something that broke the protocol."""


def describe_exception(exc: BaseException) -> dict[str, str]:
    """The ``error`` map for ``exc``."""
    cls = type(exc)
    name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    return {
        "type": name,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }
