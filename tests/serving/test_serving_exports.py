"""corral.serving's __all__ is sorted and complete."""

from __future__ import annotations

import corral.serving


def test_serving_all_is_sorted_and_complete() -> None:
    exported = list(corral.serving.__all__)
    kinds = [(0 if n.isupper() else 1 if n[0].isupper() else 2, n) for n in exported]
    assert kinds == sorted(kinds)
    public = {
        name
        for name, value in vars(corral.serving).items()
        if not name.startswith("_") and not isinstance(value, type(corral))
    }
    assert public == set(exported)
