"""Histogram records leave the hot path through a bounded queue; overflow is counted, not grown."""

from __future__ import annotations

import logging

import pytest

from conftest import Telemetry
from poolscope import semconv
from poolscope._core import _recorder


def test_a_full_queue_drops_and_counts_records_and_logs_once(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    histogram = telemetry.meter_provider.get_meter("tests").create_histogram(
        "tests.overflow", unit="s"
    )
    monkeypatch.setattr(_recorder, "MAX_QUEUED", 100)
    monkeypatch.setattr(_recorder, "_WAKE_AT", 50)
    dropped_before = _recorder.dropped()
    _recorder.drain()
    # Hold the drain lock: the flusher thread cannot empty the queue meanwhile.
    with _recorder._recorder.drain_lock:
        for _ in range(250):
            _recorder.record(histogram, 0.001, {"k": "v"}, None)
        assert len(_recorder._recorder.queue) == 100
    _recorder.drain()
    assert _recorder.dropped() - dropped_before == 150
    [point] = telemetry.points("tests.overflow")
    assert point.count == 100
    warnings = [r for r in caplog.records if r.name == "poolscope" and r.levelno == logging.WARNING]
    assert len(warnings) <= 1  # once per process, whichever test overflowed first


def test_a_collection_includes_every_finished_task(telemetry: Telemetry) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2, thread_name_prefix="collected") as pool:
        for _ in range(500):
            pool.submit(int).result()
    # no sleep, no flush call: collecting drains the queue first
    [runs] = telemetry.points(semconv.METRIC_TASK_RUN_DURATION, executor__name="collected")
    assert runs.count == 500
