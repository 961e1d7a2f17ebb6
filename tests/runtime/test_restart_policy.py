"""The pure restart policy: plans and intensity, without an event loop."""

from __future__ import annotations

import pytest

from corral.runtime.restart import RestartIntensity, RestartPlan, plan_restart, should_restart

CHILDREN = [("a", "permanent"), ("b", "temporary"), ("c", "transient"), ("d", "permanent")]


@pytest.mark.parametrize(
    ("restart", "reason", "expected"),
    [
        ("permanent", "normal", True),
        ("permanent", ValueError(), True),
        ("transient", "normal", False),
        ("transient", "shutdown", False),
        ("transient", "killed", True),
        ("transient", ValueError(), True),
        ("temporary", ValueError(), False),
    ],
)
def test_should_restart_follows_the_restart_type(
    restart: str, reason: object, expected: bool
) -> None:
    assert should_restart(restart, reason) is expected  # type: ignore[arg-type]


def test_one_for_one_plans_only_the_failed_child() -> None:
    assert plan_restart("one_for_one", CHILDREN, "c") == RestartPlan(
        stop=(), remove=(), start=("c",)
    )


def test_one_for_all_stops_others_in_reverse_removes_temporaries_and_starts_in_order() -> None:
    assert plan_restart("one_for_all", CHILDREN, "c") == RestartPlan(
        stop=("d", "b", "a"), remove=("b",), start=("a", "c", "d")
    )


def test_rest_for_one_touches_the_failed_child_and_later_ones() -> None:
    assert plan_restart("rest_for_one", CHILDREN, "b") == RestartPlan(
        stop=("d", "c"), remove=(), start=("b", "c", "d")
    )
    assert plan_restart("rest_for_one", CHILDREN, "d") == RestartPlan(
        stop=(), remove=(), start=("d",)
    )


def test_intensity_allows_max_restarts_within_the_window_and_refuses_one_more() -> None:
    intensity = RestartIntensity(3, 5.0)
    assert [intensity.add(t) for t in (0.0, 1.0, 2.0)] == [True, True, True]
    assert intensity.add(4.9) is False


def test_a_restart_exactly_max_seconds_old_no_longer_counts() -> None:
    intensity = RestartIntensity(1, 5.0)
    assert intensity.add(0.0) is True
    assert intensity.add(5.0) is True
    assert intensity.recent == 1
    assert intensity.add(9.999) is False


def test_zero_max_restarts_refuses_the_first_restart() -> None:
    assert RestartIntensity(0, 5.0).add(0.0) is False


def test_intensity_memory_stays_bounded() -> None:
    intensity = RestartIntensity(2, 1e9)
    for t in range(1000):
        intensity.add(float(t))
    assert intensity.recent == 3


def test_restart_intensity_used_counts_restarts_younger_than_max_seconds() -> None:
    intensity = RestartIntensity(max_restarts=3, max_seconds=10.0)
    assert intensity.used(0.0) == 0
    intensity.add(0.0)
    intensity.add(4.0)
    assert (intensity.used(4.0), intensity.used(9.9), intensity.used(10.0)) == (2, 2, 1)
    assert intensity.used(14.0) == 0
