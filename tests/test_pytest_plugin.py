"""poolscope's pytest plugin, run by pytest itself (``pytester``) under pytest-asyncio and anyio.

Each inner test session runs in a process of its own, as a user's would, so
the plugin is loaded from the installed ``pytest11`` entry point and what it
records (or leaves alone) is that process's own.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

DOCS = Path(__file__).resolve().parent.parent / "docs" / "testing.md"

STARVE = """
import asyncio
import os
import time

# as asyncio sizes its default executor (Python 3.13 counts the CPUs this process may use)
DEFAULT_LIMIT = min(32, (getattr(os, "process_cpu_count", os.cpu_count)() or 1) + 4)


async def starve(tasks=2 * DEFAULT_LIMIT, seconds=0.1):
    loop = asyncio.get_running_loop()
    await asyncio.gather(*(loop.run_in_executor(None, time.sleep, seconds) for _ in range(tasks)))
"""


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # the inner session's own settings: warnings are errors
    ini = "[pytest]\nfilterwarnings = error\n"
    if "no:asyncio" not in args:
        ini += "asyncio_default_fixture_loop_scope = function\n"
    pytester.makeini(ini)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)


def test_the_recorder_under_pytest_asyncio(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        starving=STARVE,
        test_inner="""
import pytest
from starving import DEFAULT_LIMIT, starve


@pytest.mark.asyncio
async def test_a_starved_default_executor(poolscope_recorder):
    await starve()
    waits = poolscope_recorder.waits("asyncio.default")
    assert len(waits) == 2 * DEFAULT_LIMIT
    # the second half waited for the first half's 100 ms
    assert sorted(waits)[DEFAULT_LIMIT] >= 0.08, waits
    assert 0.08 <= poolscope_recorder.max_wait("asyncio.default") < 1
    assert poolscope_recorder.saturated() == ["asyncio.default"]
    assert poolscope_recorder.pools() == ["asyncio.default"]
    assert all(0.099 <= run < 1 for run in poolscope_recorder.runs("asyncio.default"))
    assert "asyncio.default: %d tasks" % (2 * DEFAULT_LIMIT) in poolscope_recorder.summary()


@pytest.mark.asyncio
async def test_a_default_executor_with_room(poolscope_recorder):
    await starve(tasks=DEFAULT_LIMIT // 2)
    assert poolscope_recorder.saturated() == []
    assert poolscope_recorder.max_wait() < 0.05
    poolscope_recorder.clear()
    assert poolscope_recorder.waits() == [] and poolscope_recorder.max_wait() == 0.0
""",
    )
    result = _run(pytester, "-p", "asyncio")
    result.assert_outcomes(passed=2)


def test_the_recorder_under_anyios_plugin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_inner="""
import time

import anyio
import anyio.to_thread
import pytest

ANYIO_LIMIT = 40


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_anyios_forty_seats_taken(poolscope_recorder):
    async with anyio.create_task_group() as tasks:
        for _ in range(ANYIO_LIMIT + 5):
            tasks.start_soon(anyio.to_thread.run_sync, time.sleep, 0.1)
    waits = sorted(poolscope_recorder.waits("anyio.default"))
    assert len(waits) == ANYIO_LIMIT + 5
    assert all(wait >= 0.08 for wait in waits[ANYIO_LIMIT:]), waits
    assert poolscope_recorder.saturated() == ["anyio.default"]
    [limit] = {o.limit for o in poolscope_recorder.offloads("anyio.default")}
    assert limit == ANYIO_LIMIT
""",
    )
    result = _run(pytester, "-p", "anyio", "-p", "no:asyncio")
    result.assert_outcomes(passed=1)


def test_max_wait_fails_the_test_that_waited_and_only_that_one(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        starving=STARVE,
        test_inner="""
import pytest
from starving import DEFAULT_LIMIT, starve


@pytest.mark.asyncio
async def test_starved():
    await starve()


@pytest.mark.asyncio
async def test_with_room():
    await starve(tasks=DEFAULT_LIMIT // 2)


def test_that_fails_on_its_own():
    assert 1 == 2
""",
    )
    result = _run(pytester, "-p", "asyncio", "--poolscope-max-wait=50ms")
    result.assert_outcomes(passed=1, failed=2)
    output = result.stdout.str()
    assert re.search(
        r"a task waited \d+\.\d ms for a worker, over --poolscope-max-wait=50ms", output
    )
    assert re.search(r"asyncio\.default: \d+ tasks, longest wait \d+\.\d ms \(\d+ workers", output)
    assert "assert 1 == 2" in output  # its own failure, not ours
    assert "FAILED test_inner.py::test_starved" in output
    assert "FAILED test_inner.py::test_that_fails_on_its_own" in output


def test_max_wait_from_the_ini_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        starving=STARVE,
        test_inner="""
import pytest
from starving import starve


@pytest.mark.asyncio
async def test_starved():
    await starve()
""",
    )
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\npoolscope_max_wait = 0.05s\n"
    )
    result = pytester.runpytest_subprocess("-p", "asyncio", timeout=120)
    result.assert_outcomes(failed=1)
    assert "over --poolscope-max-wait=50ms" in result.stdout.str()


@pytest.mark.parametrize("value", ["fast", "50", "-5ms", "1h"])
def test_a_bad_max_wait_is_a_usage_error(pytester: pytest.Pytester, value: str) -> None:
    pytester.makepyfile(test_inner="def test_nothing():\n    pass\n")
    result = _run(pytester, f"--poolscope-max-wait={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert (
        f"--poolscope-max-wait: expected a duration such as 50ms or 0.2s, got {value!r}"
        in result.stderr.str()
    )


def test_unused_the_plugin_loads_nothing_and_patches_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_inner="""
import asyncio
import sys


def test_poolscope_is_not_recording():
    loaded = {m for m in sys.modules if m.startswith(("poolscope.", "opentelemetry"))}
    # the plugin, and the two leaves the package itself imports
    assert loaded == {"poolscope.pytest_plugin", "poolscope._errors", "poolscope._version"}
    loop = asyncio.new_event_loop()
    try:
        assert type(loop).run_in_executor is asyncio.BaseEventLoop.run_in_executor
    finally:
        loop.close()
""",
    )
    result = _run(pytester)
    result.assert_outcomes(passed=1)
    assert "poolscope" in _run(pytester, "--help").stdout.str()  # the option is there


def test_the_recorder_gives_the_apps_own_configuration_back(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        starving=STARVE,
        test_inner="""
import os

os.environ.update(OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none")

import pytest
import poolscope
from poolscope._core._state import state
from starving import DEFAULT_LIMIT, starve

poolscope.configure(service_name="configured-at-import")  # as an app module may
CONFIGURED = state.telemetry


@pytest.mark.asyncio
async def test_recorded_while_configured(poolscope_recorder):
    assert state.telemetry is not CONFIGURED
    await starve()
    assert len(poolscope_recorder.waits("asyncio.default")) == 2 * DEFAULT_LIMIT


def test_configuration_is_back():
    assert state.telemetry is CONFIGURED


@pytest.mark.asyncio
async def test_configured_again_under_the_recorder_is_said(poolscope_recorder):
    poolscope.uninstrument()
    poolscope.configure(service_name="again")
    with pytest.raises(RuntimeError, match="configured again after the recorder started"):
        poolscope_recorder.max_wait()
""",
    )
    result = _run(pytester, "-p", "asyncio", "-p", "no:randomly")
    result.assert_outcomes(passed=3)


def _documented_example() -> str:
    text = DOCS.read_text()
    [code] = re.findall(r"```python\n(# test_starvation\.py\n.*?)```", text, re.S)
    return code


def test_the_documented_example_fails_the_naive_route_and_passes_the_fixed_one(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_starvation=_documented_example())
    result = _run(pytester, "-p", "asyncio", "-q")
    result.assert_outcomes(passed=1, failed=1)
    output = result.stdout.str()
    assert "FAILED test_starvation.py::test_fifty_users_never_wait_for_a_worker[/naive]" in output
    assert "AssertionError: asyncio.default: 50 tasks, longest wait" in output
    assert "found the pool full" in output
