import asyncio

import pytest

from corral.testing import VirtualTimeLoop

pytest_plugins = ["pytester"]

PLUGIN_ARGS = ("-p", "corral.testing.pytest_plugin", "-W", "error", "--strict-markers")


def run_inner(
    pytester: pytest.Pytester, source: str, *, hypothesis: bool = False
) -> pytest.RunResult:
    """Run ``source`` as a test module in a pytest session of its own, with the plugin."""
    pytester.makepyfile(source)
    # Hypothesis' own plugin costs about a second a session; load it only where it is used.
    skip = () if hypothesis else ("-p", "no:hypothesispytest")
    return pytester.runpytest_inprocess(*PLUGIN_ARGS, "-p", "no:cacheprovider", *skip)


# --- in this very session -----------------------------------------------------------------------


async def test_an_async_test_runs_on_a_fresh_virtual_time_loop_at_zero() -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualTimeLoop)
    assert loop.time() == 0.0


@pytest.fixture
def greeting() -> str:
    return "hello"


async def test_an_async_test_gets_the_fixtures_it_asks_for(
    greeting: str, tmp_path: object, request: pytest.FixtureRequest
) -> None:
    assert greeting == "hello"
    assert request.node.name == "test_an_async_test_gets_the_fixtures_it_asks_for"


@pytest.mark.parametrize("delay", [0.5, 2.0])
async def test_a_parametrised_async_test_gets_its_parameter(delay: float) -> None:
    await asyncio.sleep(delay)
    assert asyncio.get_running_loop().time() == delay


@pytest.mark.realtime
async def test_a_realtime_test_runs_on_a_plain_selector_event_loop() -> None:
    loop = asyncio.get_running_loop()
    assert type(loop) is asyncio.SelectorEventLoop
    await asyncio.sleep(0)


class TestInAClass:
    async def test_an_async_method_runs_too(self) -> None:
        assert isinstance(asyncio.get_running_loop(), VirtualTimeLoop)


# --- in a pytest run of its own -----------------------------------------------------------------


def test_the_plugin_reports_async_test_outcomes(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        import asyncio

        async def test_passes():
            await asyncio.sleep(10)
            assert asyncio.get_running_loop().time() == 10.0

        async def test_fails():
            await asyncio.sleep(1)
            assert asyncio.get_running_loop().time() == 2.0

        def test_sync_tests_are_left_to_pytest():
            pass
        """,
    )
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*assert 1.0 == 2.0*"])


def test_the_realtime_marker_is_registered_and_uses_no_event_loop_policy(
    pytester: pytest.Pytester,
) -> None:
    result = run_inner(
        pytester,
        """
        import asyncio
        import pytest
        import uvloop

        @pytest.fixture(autouse=True)
        def uvloop_policy():
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            yield
            asyncio.set_event_loop_policy(None)

        @pytest.mark.realtime
        async def test_realtime():
            assert type(asyncio.get_running_loop()) is asyncio.SelectorEventLoop
        """,
    )
    result.assert_outcomes(passed=1)


def test_a_test_left_running_tasks_has_them_cancelled(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        import asyncio

        cancelled = []

        async def forever():
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(asyncio.get_running_loop().time())
                raise

        async def test_leaves_a_task():
            asyncio.get_running_loop().create_task(forever())
            await asyncio.sleep(3)

        def test_the_task_was_cancelled_at_the_end():
            assert cancelled == [3.0]
        """,
    )
    result.assert_outcomes(passed=2)


def test_hypothesis_runs_each_example_of_an_async_test_on_a_fresh_loop(
    pytester: pytest.Pytester,
) -> None:
    result = run_inner(
        pytester,
        """
        import asyncio
        import pytest
        from hypothesis import given, settings, strategies as st

        loops = set()

        @settings(max_examples=20, database=None)
        @given(st.floats(min_value=0.0, max_value=100.0))
        async def test_virtual(delay):
            loop = asyncio.get_running_loop()
            loops.add(id(loop))
            assert loop.time() == 0.0
            await asyncio.sleep(delay)
            assert loop.time() == delay

        @pytest.mark.realtime
        @settings(max_examples=3, database=None)
        @given(st.integers())
        async def test_realtime(n):
            assert type(asyncio.get_running_loop()) is asyncio.SelectorEventLoop

        @settings(max_examples=5, database=None)
        @given(st.integers(min_value=0, max_value=9))
        async def test_failing(n):
            await asyncio.sleep(n)
            assert n < 0

        def test_each_example_had_its_own_loop():
            assert len(loops) > 1
        """,
        hypothesis=True,
    )
    result.assert_outcomes(passed=3, failed=1)
    # Hypothesis reports the failing example (how it prints the value varies by version).
    result.stdout.fnmatch_lines(["*test_failing(*", "*n=*"])


def test_hypothesis_keeps_the_async_inner_test_for_the_next_run(
    pytester: pytest.Pytester,
) -> None:
    result = run_inner(
        pytester,
        """
        import asyncio
        import inspect
        import pytest
        from hypothesis import given, settings, strategies as st

        REAL = pytest.param("real", marks=pytest.mark.realtime)

        @pytest.mark.parametrize("marker", ["virtual", REAL])
        @settings(max_examples=2, database=None)
        @given(st.integers())
        async def test_either(marker, n):
            loop = asyncio.get_running_loop()
            assert (type(loop).__name__ == "VirtualTimeLoop") == (marker == "virtual")

        def test_inner_test_is_still_async():
            assert inspect.iscoroutinefunction(test_either.hypothesis.inner_test)
        """,
        hypothesis=True,
    )
    result.assert_outcomes(passed=3)
