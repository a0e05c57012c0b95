"""The README's example runs on a fresh install and shows what it promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from _helpers import default_executor_limit

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_quickstart_shows_requests_queueing_for_the_default_executor() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    limit = default_executor_limit()
    assert f"asyncio's default executor ({limit} threads)" in result.stdout
    rows = re.findall(r"^request \d+\s+(\d+)\s+(\d+)\s+(\d+)", result.stdout, flags=re.MULTILINE)
    assert len(rows) == 20
    waits = sorted(int(wait) for _, wait, _ in rows)
    # the first `limit` requests start at once; the rest wait in 200 ms steps
    assert all(wait < 50 for wait in waits[:limit]), waits
    assert all(wait >= 180 for wait in waits[limit:]), waits
    assert waits[-1] >= 200 * ((20 - 1) // limit) - 20, waits
