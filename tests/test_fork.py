"""Fork safety: a child forked from an instrumented process starts clean and is its own process.

Run in a subprocess (``tests/apps/fork_probe.py``): forking the multi-threaded
pytest process itself could deadlock, and is not what an app does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from _helpers import default_executor_limit
from poolscope import semconv

PROBE = Path(__file__).parent / "apps" / "fork_probe.py"
DEFAULT_LIMIT = default_executor_limit()


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(PROBE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_the_child_inherits_no_running_tasks_and_none_of_the_parents_loops(
    report: dict[str, Any],
) -> None:
    parent, child = report["parent"]["pools"], report["child"]["at_fork"]
    assert parent[semconv.POOL_ASYNCIO_DEFAULT]["limit"] == DEFAULT_LIMIT
    # the named pool keeps its name and limit; the task running in the parent is not the child's
    assert child == {"pdf": {"busy": 0, "pending": 0, "limit": 2}}


def test_the_childs_own_loop_reports_its_own_default_executor_not_a_sum(
    report: dict[str, Any],
) -> None:
    own = report["child"]["in_own_loop"]
    assert own[semconv.POOL_ASYNCIO_DEFAULT]["limit"] == DEFAULT_LIMIT  # not 2x: one loop


def test_each_process_exports_under_its_own_instance_id_and_pid(report: dict[str, Any]) -> None:
    parent, child = report["parent"]["identity"], report["child"]["identity"]
    for side in (parent, child):
        assert side["tracer"] == side["meter"]
        assert side["tracer"][1] == side["pid"]
    assert parent["tracer"][0] != child["tracer"][0]
    assert parent["pid"] != child["pid"]


def test_the_childs_metrics_start_from_zero_and_hold_only_its_own_tasks(
    report: dict[str, Any],
) -> None:
    """The SDK exports from a forked child too: with the parent's counts copied in,
    every forked worker would add the parent's tasks to the fleet's sums again. The
    SDK's resource detection after the fork (a thread pool of its own) is not counted."""
    parent = report["parent"]["waits_before_fork"]
    assert parent == {semconv.POOL_ASYNCIO_DEFAULT: 1, "pdf": 1}
    assert report["child"]["waits_at_fork"] == {}
    assert report["child"]["waits_after_own_loop"] == {semconv.POOL_ASYNCIO_DEFAULT: 1}
