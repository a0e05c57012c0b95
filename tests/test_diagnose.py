"""poolscope.diagnose(): the verdict that fits the figures, per process, and none when healthy."""

from __future__ import annotations

import re

import pytest

import poolscope
from poolscope import BlockSite, PoolWindow, ProcessWindow, semconv


def pool(name: str = semconv.POOL_ASYNCIO_DEFAULT, **values: float | str) -> PoolWindow:
    fields: dict[str, object] = {
        "pool": name,
        "limit": 6,
        "busy_peak": 6,
        "busy_typical": 6,
        "pending_peak": 10,
        "tasks": 100,
        "wait_seconds": 40.0,
        "run_seconds": 20.0,
        "duration": 10.0,
        "load": 25,
        "start": 25,
        "service": "api",
        "instance": "a",
        "type": semconv.EXECUTOR_TYPE_THREAD_POOL,
    }
    fields.update(values)
    return PoolWindow(**fields)  # type: ignore[arg-type]


def process(**values: object) -> ProcessWindow:
    """A healthy process: a fifth of a core, its loop busy a tenth of the time, on time."""
    fields: dict[str, object] = {
        "duration": 10.0,
        "cpu": 0.2,
        "loop_utilization": 0.1,
        "loop_cpu": 0.1,
        "lag_p99": 0.004,
        "late_share": 0.0,
        "load": 25,
        "start": 25,
        "service": "api",
        "instance": "a",
    }
    fields.update(values)
    return ProcessWindow(**fields)  # type: ignore[arg-type]


def kinds(diagnosis: poolscope.Diagnosis) -> list[str]:
    return [verdict.kind for verdict in diagnosis.verdicts]


def test_a_full_pool_with_a_queue_and_cpu_to_spare_is_starvation_from_its_first_load() -> None:
    diagnosis = poolscope.diagnose(
        [
            pool(load=1, start=1, busy_typical=1, busy_peak=2, pending_peak=0),
            pool(load=10, start=10, wait_p95=0.8),
            pool(load=100, start=100, wait_p95=4.0, wait_seconds=500.0, run_seconds=60.0),
        ],
        [process(load=load, start=load) for load in (1, 10, 100)],
    )
    [verdict] = diagnosis.verdicts
    assert verdict.kind == poolscope.VerdictKind.POOL_STARVATION
    assert (verdict.pool, verdict.limit, verdict.since_load) == ("asyncio.default", 6, 10)
    assert verdict.windows == 2
    assert verdict.evidence["wait_p95"] == 4.0
    assert verdict.evidence["process_cpu"] == 0.2
    # Little's law at the worst window: (500 s waiting + 60 s running) / 10 s = 56 tasks at once
    assert verdict.evidence["needed_workers"] == pytest.approx(56)
    assert "asyncio.default hit its limit of 6 workers from a load of 10" in verdict.summary
    assert "while the process had CPU to spare" in verdict.summary
    assert "dedicated pool of about 56 workers" in verdict.advice
    measured = poolscope.diagnose([pool(demand_typical=31.0)])
    assert measured.verdicts[0].evidence["needed_workers"] == 31  # samples of busy + pending win


def test_the_workers_held_by_sync_llm_calls_are_named_with_the_fix() -> None:
    [verdict] = poolscope.diagnose([pool(run_seconds=20.0, llm_seconds=15.0)]).verdicts
    assert (
        "asyncio.default was held by sync LLM calls 75% of its workers' time, other work 25%"
        in verdict.summary
    )
    assert "async client (AsyncOpenAI" in verdict.advice
    [anyio] = poolscope.diagnose(
        [pool(semconv.POOL_ANYIO_DEFAULT, limit=40, busy_typical=40, busy_peak=40)]
    ).verdicts
    assert "total_tokens" in anyio.advice


def test_the_workers_held_by_sync_http_calls_are_named_with_their_server() -> None:
    target = "requests → 127.0.0.1:8001"
    held = pool(run_seconds=20.0, io_seconds=12.0, io_target=target, io_p50=0.3, llm_seconds=4.0)
    [verdict] = poolscope.diagnose([held]).verdicts
    assert verdict.summary.count("asyncio.default was held by sync HTTP calls") == 1
    assert (
        "held by sync HTTP calls (requests → 127.0.0.1:8001, 300 ms p50) 60% and "
        "sync LLM calls 20% of its workers' time, other work 20%" in verdict.summary
    )
    assert "async client (httpx.AsyncClient" in verdict.advice
    assert verdict.evidence["io_share"] == 0.6
    assert verdict.evidence["io_target"] == target
    assert verdict.evidence["io_p50"] == 0.3
    # what an LLM SDK's own HTTP took is in its LLM seconds: never more than the run time in all
    [capped] = poolscope.diagnose(
        [pool(run_seconds=20.0, llm_seconds=15.0, io_seconds=10.0)]
    ).verdicts
    assert capped.evidence["io_share"] == 0.25


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
    diagnosis = poolscope.diagnose([pool(**values)], [process()])
    assert diagnosis.ok and diagnosis.healthy == ("asyncio.default",)
    assert "No pool hit its limit" in diagnosis.summary()


def test_saturation_is_per_process_never_summed_across_processes() -> None:
    # two processes with 6 workers each, 4 busy in one and 6 in the other: 10 of 12 would
    # look fine summed, and 10 of 6 saturated against one limit; neither is the truth
    diagnosis = poolscope.diagnose(
        [pool(instance="a", busy_typical=4, busy_peak=4), pool(instance="b")],
        [process(instance="a"), process(instance="b")],
    )
    [verdict] = diagnosis.verdicts
    assert verdict.instance == "b"


def test_a_full_pool_in_a_process_out_of_cpu_is_cpu_bound_not_starvation() -> None:
    # The pool's tasks wait for the CPU (or the GIL): a bigger pool would not help.
    diagnosis = poolscope.diagnose(
        [pool()], [process(cpu=0.97, loop_utilization=0.95, loop_cpu=0.9, late_share=0.4)]
    )
    [verdict] = diagnosis.verdicts
    assert verdict.kind == poolscope.VerdictKind.CPU_BOUND
    assert "asyncio.default" in verdict.summary  # the full pool is mentioned, not blamed
    assert "more processes" in verdict.advice


@pytest.mark.parametrize(
    "values",
    [
        {"cpu": 0.95},  # about a core
        {"cpu": 0.7, "loop_utilization": 0.95, "loop_cpu": 0.6},  # a loop that runs and runs
    ],
)
def test_a_process_out_of_cpu_is_cpu_bound(values: dict[str, float]) -> None:
    diagnosis = poolscope.diagnose([], [process(**values)])
    assert kinds(diagnosis) == [poolscope.VerdictKind.CPU_BOUND]


def test_a_loop_busy_waiting_rather_than_computing_is_not_cpu_bound() -> None:
    # busy 95% of the time but on the CPU a tenth of it: blocked or waiting, not computing
    diagnosis = poolscope.diagnose([], [process(loop_utilization=0.95, loop_cpu=0.1)])
    assert diagnosis.ok


def test_callbacks_that_block_the_loop_are_named_by_line() -> None:
    sleep = BlockSite("app.handler", "/srv/app.py", 12, 20, 6.0)
    once = BlockSite("app.startup", "/srv/app.py", 3, 1, 0.2)
    diagnosis = poolscope.diagnose(
        [], [process(loop_utilization=0.7, loop_cpu=0.05, late_share=0.6, blocks=(sleep, once))]
    )
    [verdict] = diagnosis.verdicts
    assert verdict.kind == poolscope.VerdictKind.LOOP_BLOCKED
    assert "app.handler at /srv/app.py:12: 20 times, 300 ms each" in verdict.summary
    assert "/srv/app.py:12" in verdict.advice
    assert verdict.evidence["sites"][0]["count"] == 20


@pytest.mark.parametrize(
    "blocks",
    [
        (BlockSite("app.startup", "/srv/app.py", 3, 1, 0.9),),  # once is not a pattern
        (BlockSite("app.handler", "/srv/app.py", 12, 3, 0.3),),  # 3% of the window
        # the loop waited for the GIL, or for a core, in whatever code it was: not its doing
        (BlockSite("asyncio.write", "/x.py", 1, 9, 3.0, cause=semconv.BLOCK_CAUSE_GIL),),
        (BlockSite("asyncio.write", "/x.py", 1, 9, 3.0, cause=semconv.BLOCK_CAUSE_CPU_WAIT),),
    ],
)
def test_a_one_off_a_short_or_a_borrowed_block_is_not_a_blocked_loop(
    blocks: tuple[BlockSite, ...],
) -> None:
    assert poolscope.diagnose([], [process(blocks=blocks)]).ok


def test_a_loop_lagging_while_other_threads_run_is_gil_contention() -> None:
    diagnosis = poolscope.diagnose(
        [pool("crunch", limit=8, busy_typical=8, busy_peak=8)],
        [process(cpu=1.0, loop_utilization=0.3, loop_cpu=0.04, late_share=0.45, lag_p99=0.48)],
    )
    [verdict] = diagnosis.verdicts
    assert verdict.kind == poolscope.VerdictKind.GIL_CONTENTION
    assert "other threads 0.96" in verdict.summary
    assert "crunch" in verdict.summary
    assert "ProcessPoolExecutor" in verdict.advice


def test_one_late_heartbeat_is_not_a_lagging_loop() -> None:
    # The p99 of a short window is its single worst sample: 444 ms once in 60 heartbeats
    # (2%) is noise, the share of late heartbeats says so.
    diagnosis = poolscope.diagnose([], [process(lag_p99=0.444, late_share=0.02, cpu=0.6)])
    assert diagnosis.ok


def test_a_healthy_process_gets_no_verdict_and_the_json_has_every_field() -> None:
    assert poolscope.diagnose([pool(busy_typical=2, pending_peak=0)], [process()]).ok
    [verdict] = poolscope.diagnose([pool()]).verdicts
    assert set(verdict.to_json()) >= {
        "kind",
        "service",
        "instance",
        "pool",
        "limit",
        "evidence",
        "advice",
    }


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
        ],
        [poolscope.ProcessWindow(duration=10.0, cpu=0.1, loop_utilization=0.05, loop_cpu=0.05)],
    )
    assert "the tasks wanted about 36 workers at once" in diagnosis.summary()


def test_counts_estimated_from_rates_read_whole_in_verdicts_and_in_top() -> None:
    """A Prometheus server extrapolates increase() and interpolates medians: 14.2 blocks, 12.5
    busy workers. A count of things is shown as a count."""
    from poolscope._analysis._readings import Windows
    from poolscope._cli._top import render

    site = BlockSite("app.handler", "/srv/app.py", 12, 14.2073, 10.6)
    found = Windows(
        [pool(busy_typical=5.5, busy_peak=6, pending_peak=9.6)],
        [process(loop_utilization=0.7, loop_cpu=0.05, late_share=0.6, blocks=(site,))],
    )
    screen = render(found, "http://127.0.0.1:9090", "the last 1m", width=400)
    assert re.search(rf"{re.escape(semconv.POOL_ASYNCIO_DEFAULT)}\s+\S+\s+6/6\s+10\s", screen)
    assert "app.handler at /srv/app.py:12: 14 times, 746 ms each" in screen
    assert not re.search(r"\d\.\d{3,}", screen), screen
