"""Where an offload's cost goes: each part of poolscope's hot path, and the SDK calls it makes.

Each line times one part on its own (``timeit``, best of 7 repeats, so the
figure is the part's cost on a quiet moment of this machine, not a mean of
its noise): poolscope's own bookkeeping of a task, and the OpenTelemetry SDK
calls the task's figures end in. The sum is not a benchmark of an offload
(``bench_offload.py`` is); it says which part an optimisation has to touch.

    python benchmarks/bench_parts.py
"""

from __future__ import annotations

import contextvars
import functools
import os
import sys
import timeit
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from _providers import batch_providers, configured_providers

CALLS = 20_000
REPEATS = 7


def noop() -> None:
    return None


def _best(part: Callable[[], Any], setup: Callable[[], Any]) -> float:
    return min(timeit.repeat(part, setup, number=CALLS, repeat=REPEATS)) / CALLS


def main() -> None:
    import poolscope
    from poolscope._core import _recorder, _state, _task
    from poolscope._core._telemetry import Telemetry
    from poolscope._paths._thread_pool import register_executor

    tracer_provider, meter_provider = batch_providers()
    poolscope.instrument(meter_provider=meter_provider)
    telemetry = _state.state.telemetry
    assert telemetry is not None
    executor = ThreadPoolExecutor(2)
    pool = register_executor(executor, None)
    histogram = meter_provider.get_meter("bench").create_histogram("bench", unit="s")
    attributes = dict(pool.attributes)
    tracer = tracer_provider.get_tracer("bench")
    in_context = functools.partial(contextvars.copy_context().run, noop)
    task = _task.Task(pool, telemetry, noop)
    # The same settings, recording into a meter provider as configure() makes it.
    configured = Telemetry(telemetry.settings, meter_provider=configured_providers()[1])

    def life(into: Telemetry = telemetry) -> None:
        """What a task does besides running: created, started, ended, resumed."""
        cycle = _task.Task(pool, into, noop)
        token = cycle.start()
        cycle.finish(token, None)
        cycle.resumed()

    def life_and_replay() -> None:
        life()
        _recorder.drain()

    def life_and_own_histograms() -> None:
        life(configured)
        _recorder.drain()

    def span() -> None:
        tracer.start_span("bench", attributes={**attributes, "code.function.name": "x"}).end()

    parts: list[tuple[str, Callable[[], Any]]] = [
        (
            "poolscope: begin() (pool lookup, Task)",
            lambda: _task.begin(executor, noop, "thread_pool", register_executor),
        ),
        ("poolscope: Task.wrap (plain callable)", lambda: task.wrap(noop)),
        ("poolscope: Task.wrap (to_thread's ctx.run)", lambda: task.wrap(in_context)),
        ("poolscope: create, start, finish, resume (3 records queued)", life),
        ("the same, and the 3 records replayed into the SDK", life_and_replay),
        (
            "the same, the 3 records into poolscope's own histograms (configure()'s provider)",
            life_and_own_histograms,
        ),
        (
            "SDK: one Histogram.record, poolscope's attributes",
            lambda: histogram.record(0.001, attributes),
        ),
        (
            "poolscope's own histogram: one record, the same attributes",
            lambda: configured.wait.record(0.001, attributes),
        ),
        ("SDK: one span with 3 attributes, started and ended", span),
    ]
    print(f"best of {REPEATS} repeats of {CALLS} calls")
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
    print("| part | µs per call |")
    print("|---|---:|")
    for label, part in parts:
        # each repeat starts with nothing queued (the flusher replays what is)
        print(f"| {label} | {_best(part, _recorder.drain) * 1e6:.2f} |")
    executor.shutdown()


if __name__ == "__main__":
    main()
