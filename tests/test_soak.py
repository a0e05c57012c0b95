"""20,000 offloads through every covered path into the real collector: each one
counted exactly once in both histograms and both span names, the gauges back at 0.

The short version of ``benchmarks/soak.py`` (whose million-task run measures
memory over time). It runs as its own process: ``configure()`` sets the global
providers, which must not leak into the other tests, and forks process-pool
workers.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks import soak
from tools import stack as _stack

pytestmark = pytest.mark.stack

TASKS = 20_000


def test_every_offload_is_counted_once_at_the_collector_and_the_gauges_end_at_zero(
    tmp_path: Path,
) -> None:
    collector = _stack.binary("collector")
    figures = tmp_path / "soak.json"
    process = subprocess.run(
        [
            sys.executable,
            str(_stack.ROOT / "benchmarks" / "soak.py"),
            f"--tasks={TASKS}",
            f"--json={figures}",
            f"--collector-bin={collector}",
            "--timeout=120",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert process.returncode == 0, process.stdout + process.stderr
    result = json.loads(figures.read_text())

    # Every path got its share, and the shares add up to the run.
    assert set(result["paths"]) == {o.path for o in soak.OFFLOADS}
    assert all(n > 0 for n in result["paths"].values()), result["paths"]
    assert sum(result["paths"].values()) == TASKS
    expected: dict[str, int] = {}
    for offload in soak.OFFLOADS:
        expected[offload.pool] = expected.get(offload.pool, 0) + result["paths"][offload.path]

    pools = {pool["pool"]: pool for pool in result["pools"]}
    assert set(pools) == set(expected)
    for name, tasks in expected.items():
        pool = pools[name]
        seen = [pool[k] for k in ("waits", "runs", "run_spans", "wait_spans")]
        assert seen == [tasks] * 4, (name, pool)
        gauges = [
            pool[k]
            for k in (
                "busy_in_process",
                "pending_in_process",
                "busy_collector",
                "pending_collector",
            )
        ]
        assert gauges == [0, 0, 0, 0], (name, pool)

    # The SDK made, exported and ended exactly those spans; nothing was dropped.
    spans = soak.SPANS_PER_TASK * TASKS
    sdk = result["sdk"]
    assert sdk["spans started"] == sdk["spans exported"] == spans, sdk
    assert sdk["spans live"] == 0, sdk
    assert not [k for k in sdk if k.startswith("spans dropped")], sdk
    assert result["recorder_dropped"] == 0

    for key in ("rss_warmup_mb", "rss_end_mb", "rss_growth_mb"):
        assert isinstance(result[key], float), (key, result[key])
        assert math.isfinite(result[key]), (key, result[key])
    assert result["rss_warmup_mb"] > 0
    assert result["failures"] == []
    assert result["ok"] is True
    print(f"RSS growth after warm-up over {TASKS:,} tasks: {result['rss_growth_mb']} MB")


def test_a_miscount_or_a_gauge_left_up_fails_the_soak() -> None:
    """The judging itself: one task missing, one extra, or a gauge not back at 0 fails."""
    counted = {
        "waits": 10.0,
        "runs": 10.0,
        "run_spans": 10.0,
        "wait_spans": 10.0,
        "busy_in_process": 0,
        "pending_in_process": 0,
        "busy_collector": 0.0,
        "pending_collector": 0.0,
    }
    assert soak.PoolResult("p", 10, **counted).failures() == []  # type: ignore[arg-type]
    for key, wrong in (("runs", 9.0), ("wait_spans", 11.0), ("pending_collector", 1.0)):
        failures = soak.PoolResult("p", 10, **{**counted, key: wrong}).failures()  # type: ignore[arg-type]
        assert len(failures) == 1, failures
        assert key in failures[0]
    missing = soak.PoolResult("p", 10, **{**counted, "busy_collector": None}).failures()  # type: ignore[arg-type]
    assert missing == ["p: busy_collector is None, not 0"]
