"""A pytest plugin (named in ``tests/conftest.py``) that registers each server module of the
``servers`` package as a plugin, so their fixtures (``redis_server``, ...) reach every test.

A new server needs only its module, ``tests/servers/<name>.py``, defining its fixtures.
"""

from __future__ import annotations

from pathlib import Path

_NOT_SERVERS = {"__init__", "common", "fixtures"}

pytest_plugins = sorted(
    f"servers.{path.stem}"
    for path in Path(__file__).parent.glob("*.py")
    if path.stem not in _NOT_SERVERS and not path.stem.startswith("_")
)
