"""poolscope's pytest plugin: keep thread pool starvation out with a test.

Loaded by pytest from the ``pytest11`` entry point wherever poolscope is
installed (``-p no:poolscope`` turns it off). It imports nothing of
poolscope's until a test asks for it, so a suite that does not use it pays
nothing.

* The ``poolscope_recorder`` fixture records every task handed to a pool
  during the test (the default executor, anyio's limiter, your own pools),
  in memory: ``max_wait(pool)``, ``waits(pool)``, ``saturated()``,
  ``offloads(pool)``, ``summary()``.
* ``--poolscope-max-wait=50ms`` (or the ``poolscope_max_wait`` ini option)
  records every test and fails each one whose offloads waited longer for a
  worker.

Works with pytest-asyncio and with anyio's plugin alike: recording is per
process, not per event loop.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Final

import pytest

if TYPE_CHECKING:
    from ._sdk._test_recording import Offload, Recorder

__all__ = [
    "Offload",
    "Recorder",
    "parse_duration",
    "poolscope_recorder",
    "pytest_addoption",
    "pytest_configure",
]

_OPTION: Final = "--poolscope-max-wait"
_INI: Final = "poolscope_max_wait"
_DURATION: Final = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>ms|s)")

try:
    _call_wrapper: Callable[[Any], Any] | None = pytest.hookimpl(wrapper=True)
except TypeError:  # pluggy < 1.2, under an old pytest: no --poolscope-max-wait
    _call_wrapper = None


def __getattr__(name: str) -> Any:
    """``Recorder`` and ``Offload``, for annotations, loaded when first asked for."""
    if name not in ("Offload", "Recorder"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ._sdk import _test_recording

    value = getattr(_test_recording, name)
    value.__module__ = __name__
    globals()[name] = value
    return value


def parse_duration(text: str) -> float:
    """Seconds from ``50ms``, ``0.2s``; a :class:`ValueError` naming what was wrong otherwise."""
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        raise ValueError(f"expected a duration such as 50ms or 0.2s, got {text!r}")
    number = float(found["number"])
    return number / 1000 if found["unit"] == "ms" else number


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("poolscope", "thread pool starvation (poolscope)")
    group.addoption(
        _OPTION,
        metavar="DURATION",
        help="fail every test whose tasks waited longer than DURATION (50ms, 0.2s) for a "
        "worker of any pool",
    )
    parser.addini(_INI, f"default for {_OPTION}", default=None)


def pytest_configure(config: pytest.Config) -> None:
    text = config.getoption(_OPTION) or config.getini(_INI)
    if not text:
        return
    try:
        limit = parse_duration(str(text))
    except ValueError as error:
        raise pytest.UsageError(f"{_OPTION}: {error}") from None
    if _call_wrapper is None:
        raise pytest.UsageError(f"{_OPTION} needs pytest 8 or later")
    config.pluginmanager.register(_MaxWait(limit), "poolscope-max-wait")


def _recording() -> AbstractContextManager[Recorder]:
    try:
        from ._sdk._test_recording import recording
    except ImportError as error:  # the SDK is an extra
        pytest.fail(
            f"poolscope's recorder needs the OpenTelemetry SDK ({error}): "
            "pip install 'poolscope[otlp]'",
            pytrace=False,
        )
    return recording()


@pytest.fixture
def poolscope_recorder() -> Iterator[Recorder]:
    """Every task handed to a pool during the test: how long each waited for a worker."""
    with _recording() as recorder:
        yield recorder


class _MaxWait:
    """Registered only with ``--poolscope-max-wait``: records each test's call, fails it if a
    task waited longer."""

    def __init__(self, limit: float) -> None:
        self.limit = limit

    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, object, object]:
        with _recording() as recorder:
            result = yield
            worst = recorder.max_wait()
            summary = recorder.summary()
        if worst > self.limit:
            pytest.fail(
                f"a task waited {worst * 1000:.1f} ms for a worker, over {_OPTION}="
                f"{self.limit * 1000:g}ms:\n{summary}",
                pytrace=False,
            )
        return result

    if _call_wrapper is not None:
        pytest_runtest_call = _call_wrapper(pytest_runtest_call)
