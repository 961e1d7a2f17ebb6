"""A pytest plugin that runs ``async def`` tests, on virtual time unless asked otherwise.

Enable it in the top ``conftest.py``::

    pytest_plugins = ["corral.testing.pytest_plugin"]

Each ``async def`` test runs with ``corral.testing.run`` on a fresh ``VirtualTimeLoop``
starting at 0.0, so sleeps and timeouts take no real time. A test marked
``@pytest.mark.realtime`` runs instead on a fresh ``asyncio.SelectorEventLoop`` with the real
clock, cleaned up as ``asyncio.run`` does; the loop is made directly, so an event-loop policy
installed elsewhere (uvloop's, say) is not used.

Fixtures are set up by pytest as usual, outside the loop: they are plain functions, and async
set-up belongs in the test itself. Hypothesis' ``@given`` works on ``async def`` tests: each
example runs on a loop of its own, fresh for that example.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Coroutine

import pytest

from corral.testing.virtual_time import check_main, run, run_and_close

__all__ = ["pytest_configure", "pytest_pyfunc_call"]

_Runner = Callable[[Coroutine[object, None, object]], object]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "realtime: runs on the real-time event loop instead of corral.testing's virtual clock",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an ``async def`` test to completion; leave every other test to pytest."""
    runner = _run_realtime if pyfuncitem.get_closest_marker("realtime") else run
    test = pyfuncitem.obj
    given = getattr(test, "hypothesis", None)
    if given is not None and inspect.iscoroutinefunction(given.inner_test):
        # Hypothesis reads ``inner_test`` on every call; swap in a synchronous one for this call.
        inner = given.inner_test
        given.inner_test = _in_sync(inner, runner)
        try:
            test(**_test_args(pyfuncitem))
        finally:
            given.inner_test = inner
        return True
    if not inspect.iscoroutinefunction(test):
        return None
    runner(test(**_test_args(pyfuncitem)))
    return True


def _test_args(pyfuncitem: pytest.Function) -> dict[str, object]:
    return {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}


def _in_sync(
    test: Callable[..., Coroutine[object, None, object]], runner: _Runner
) -> Callable[..., None]:
    @functools.wraps(test)
    def run_example(*args: object, **kwargs: object) -> None:
        runner(test(*args, **kwargs))

    return run_example


def _run_realtime(main: Coroutine[object, None, object]) -> object:
    check_main("corral.testing.pytest_plugin", main)
    return run_and_close(asyncio.SelectorEventLoop(), main)
