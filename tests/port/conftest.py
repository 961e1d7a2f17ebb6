"""Port tests run real worker processes that import tests/port/port_handlers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture
def handler_env() -> dict[str, str]:
    """Environment that lets a worker import port_handlers."""
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": f"{HERE}{os.pathsep}{path}" if path else str(HERE)}
