"""The event loop corral runs on: uvloop when installed (the ``fast`` extra), else asyncio's.

This module is the only place that imports uvloop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["default_loop_factory", "uvloop_available"]


def uvloop_available() -> bool:
    """Whether uvloop can be imported."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def default_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """``uvloop.new_event_loop`` if uvloop is installed, else ``asyncio.new_event_loop``."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop
