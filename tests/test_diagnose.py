"""poolscope.diagnose(): the bottleneck pool, per process, its load and the workers it needed."""

from __future__ import annotations

import pytest

import poolscope
from poolscope import LoopWindow, PoolWindow, semconv


def window(pool: str = semconv.POOL_ASYNCIO_DEFAULT, **values: float | str) -> PoolWindow:
    fields: dict[str, object] = {
        "pool": pool,
        "limit": 6,
        "busy_peak": 6,
        "busy_typical": 6,
        "pending_peak": 10,
        "tasks": 100,
        "wait_seconds": 40.0,
        "run_seconds": 20.0,
        "duration": 10.0,
        "load": 25,
        "service": "api",
        "instance": "a",
    }
    fields.update(values)
    return PoolWindow(**fields)  # type: ignore[arg-type]


def test_a_pool_busy_at_its_limit_with_a_queue_is_named_with_its_first_load() -> None:
    diagnosis = poolscope.diagnose(
        [
            window(load=1, busy_typical=1, busy_peak=2, pending_peak=0),
            window(load=10, wait_p95=0.8),
            window(load=100, wait_p95=4.0, wait_seconds=500.0, run_seconds=60.0),
        ]
    )
    [finding] = diagnosis.pools
    assert (finding.pool, finding.limit, finding.saturated_at) == ("asyncio.default", 6, 10)
    assert finding.windows_saturated == 2
    assert finding.worst_wait_p95 == 4.0
    # Little's law: (500 s waiting + 60 s running) over 10 s = 56 tasks in the pool at once
    assert finding.needed_workers == pytest.approx(56)
    measured = poolscope.diagnose([window(load=10, demand_typical=31.0)])
    assert measured.pools[0].needed_workers == 31  # samples of busy + pending win
    assert diagnosis.bottleneck("api") is finding
    assert "asyncio.default in api hit its limit of 6 workers from a load of 10" in (
        diagnosis.summary()
    )


@pytest.mark.parametrize(
    "values",
    [
        {"busy_typical": 6, "pending_peak": 0},  # full, but nobody waited
        {"busy_typical": 5, "busy_peak": 6},  # full only at a peak
    ],
)
def test_a_full_pool_without_a_queue_or_only_briefly_full_is_healthy(
    values: dict[str, float],
) -> None:
    diagnosis = poolscope.diagnose([window(**values)])
    assert diagnosis.ok and diagnosis.healthy == ("asyncio.default",)
    assert "No pool hit its limit" in diagnosis.summary()


def test_saturation_is_per_process_never_summed_across_processes() -> None:
    # two processes with 6 workers each, 4 busy in each: 8 of 12 would look fine
    # summed, and 8 of 6 saturated against one limit; neither is the truth
    diagnosis = poolscope.diagnose(
        [
            window(instance="a", busy_typical=4, busy_peak=4),
            window(instance="b", busy_typical=6, busy_peak=6),
        ]
    )
    [finding] = diagnosis.pools
    assert finding.instance == "b"


def test_the_event_loop_is_blamed_when_it_lags_and_no_pool_is_full() -> None:
    diagnosis = poolscope.diagnose(
        [window(busy_typical=1, busy_peak=2, pending_peak=0)],
        [LoopWindow(lag_p99=0.002, duration=10, load=1), LoopWindow(0.4, 10, blocked=3, load=50)],
    )
    assert not diagnosis.pools
    [loop] = diagnosis.loops
    assert (loop.worst_lag_p99, loop.blocked, loop.lagging_from) == (0.4, 3, 50)
    assert "no pool size will fix that" in diagnosis.summary()


def test_the_readme_example_runs() -> None:
    diagnosis = poolscope.diagnose(
        [
            poolscope.PoolWindow(
                pool="asyncio.default",
                limit=6,
                busy_peak=6,
                busy_typical=6,
                pending_peak=40,
                tasks=120,
                wait_seconds=300.0,
                run_seconds=60.0,
                duration=10.0,
                load=100,
            )
        ]
    )
    assert "the tasks wanted about 36 workers at once" in diagnosis.summary()
