"""The cardinality guard: pool names in metrics are bounded; spans keep the names."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

import poolscope
from conftest import Telemetry
from poolscope import ConfigurationError, semconv
from poolscope._config import ENV_MAX_POOL_NAMES, Settings
from poolscope._core import _pools


@pytest.fixture
def room_for_three(telemetry: Telemetry) -> Iterator[None]:
    """No name seen yet, and a cap of three."""
    with _pools.fresh_names():
        _pools.set_name_limit(3)
        yield


@pytest.mark.usefixtures("room_for_three")
def test_names_past_the_cap_are_counted_as_other_while_spans_keep_them(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    names = [f"per-request-pool-{n}" for n in range(6)]
    tracer = telemetry.tracer
    for name in names:
        pool = poolscope.instrument_executor(ThreadPoolExecutor(1), name=name)
        with tracer.start_as_current_span("request"):
            pool.submit(lambda: None).result(timeout=10)
        pool.shutdown()
    in_metrics = {
        point.attributes[semconv.ATTR_EXECUTOR_NAME]
        for point in telemetry.points(semconv.METRIC_TASK_RUN_DURATION)
    }
    assert in_metrics == {*names[:3], semconv.POOL_OTHER}
    [other] = telemetry.points(semconv.METRIC_TASK_RUN_DURATION, executor__name="other")
    assert other.count == 3  # the three later pools' tasks, none lost
    in_spans = {
        (span.attributes or {})[semconv.ATTR_EXECUTOR_NAME]
        for span in telemetry.spans(semconv.SPAN_RUN)
    }
    assert in_spans == set(names)
    warnings = [r for r in caplog.records if "distinct pool names" in r.getMessage()]
    assert len(warnings) == 1


@pytest.mark.usefixtures("room_for_three")
def test_the_loop_pools_are_never_folded() -> None:
    _pools.set_name_limit(0)  # full
    assert _pools.metric_name(semconv.POOL_ASYNCIO_DEFAULT) == semconv.POOL_ASYNCIO_DEFAULT
    assert _pools.metric_name(semconv.POOL_ANYIO_DEFAULT) == semconv.POOL_ANYIO_DEFAULT
    assert _pools.metric_name("a-new-name") == semconv.POOL_OTHER


@pytest.mark.parametrize("raw", ["-1", "many", "1e3", "100001", " 5x"])
def test_a_bad_cap_is_refused_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigurationError, match=ENV_MAX_POOL_NAMES):
        Settings.resolve(environ={ENV_MAX_POOL_NAMES: raw})
    with pytest.raises(ConfigurationError, match="max_pool_names"):
        Settings.resolve(max_pool_names=-1, environ={})
