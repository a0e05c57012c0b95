"""``poolscope audit`` on the example apps and on an app that hides every pattern.

Each run is the real command in a process of its own (it imports the app,
whose import configures poolscope), read back through ``--json``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tools.stack import ROOT

EXAMPLES = ROOT / "examples"
HIDDEN = ROOT / "tests" / "apps" / "audit_hidden.py"


def _audit(target: str, tmp_path: Path) -> tuple[int, str, str, dict[str, Any]]:
    figures = tmp_path / "audit.json"
    result = subprocess.run(
        [sys.executable, "-m", "poolscope", "audit", target, f"--json={figures}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    found = json.loads(figures.read_text()) if figures.exists() else {}
    return result.returncode, result.stdout, result.stderr, found


def _flagged(found: dict[str, Any]) -> set[tuple[str, str, int]]:
    return {
        (item["key"], finding["file"], finding["line"])
        for item in found["items"]
        for finding in item["findings"]
    }


def _line(path: Path, text: str) -> int:
    [number] = [i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line]
    return number


def test_the_naive_example_breaks_every_item_the_article_names(tmp_path: Path) -> None:
    status, out, err, found = _audit("examples/naive_app.py", tmp_path)
    assert status == 1, err
    naive = EXAMPLES / "naive_app.py"
    file = "examples/naive_app.py"
    llm_calls = [
        i
        for i, line in enumerate(naive.read_text().splitlines(), 1)
        if "llm.chat.completions.create(" in line
    ]
    assert _flagged(found) == {
        ("sync_routes", file, _line(naive, "def summary(")),
        ("sync_routes", file, _line(naive, "def stream(")),
        ("loop_blocked", file, _line(naive, 'return {"label": _ask(q)}')),
        ("default_executor", file, _line(naive, "await loop.run_in_executor(None")),
        ("default_executor", file, _line(naive, "await asyncio.to_thread(")),
        ("threaded_responses", file, _line(naive, "StreamingResponse(chunks()")),
        *(("llm_limit", file, line) for line in llm_calls),
    }
    assert len(llm_calls) == 2
    messages = {f["message"] for item in found["items"] for f in item["findings"]}
    assert (
        "GET /summary: `def summary` runs in a worker thread per request, and FastAPI "
        "validates its response model in a second one"
    ) in messages
    assert (
        "`async def classify` calls _ask → llm.chat.completions.create (openai.OpenAI, sync) "
        "on the event loop"
    ) in messages
    assert [i["key"] for i in found["items"] if i["ok"]] == ["executors"]
    assert found["app"] == "FastAPI app `app`" and found["llm_calls"] == 2
    assert f"✗ no blocking call runs on the event loop\n    {file}:" in out
    assert "5 of 6 items fail." in out


def test_the_fixed_example_is_clean(tmp_path: Path) -> None:
    status, out, err, found = _audit("examples/fixed_app.py", tmp_path)
    assert status == 0, err + out
    assert _flagged(found) == set()
    assert all(item["ok"] for item in found["items"])
    assert found["llm_calls"] == 2  # both under `async with llm_quota`
    assert "All 6 items pass." in out


def test_every_hidden_pattern_is_found_at_its_line_and_nothing_else(tmp_path: Path) -> None:
    # aliased imports, functools.partial (bound to a name, over a call and over
    # run_in_executor), a sync client stored on app.state, a sync method called
    # through self, a sync dependency, a background task, a file response
    expected = set()
    for number, line in enumerate(HIDDEN.read_text().splitlines(), 1):
        marker = re.search(r"# audit: ([\w, ]+)$", line)
        if marker:
            for key in marker[1].split(","):
                expected.add((key.strip(), "tests/apps/audit_hidden.py", number))
    assert len(expected) == 10
    status, _, err, found = _audit("tests/apps/audit_hidden.py:app", tmp_path)
    assert status == 1, err
    assert _flagged(found) == expected


def test_a_directory_is_read_without_importing_and_finds_the_same_lines(tmp_path: Path) -> None:
    copy = tmp_path / "src"
    copy.mkdir()
    shutil.copy(EXAMPLES / "naive_app.py", copy / "naive_app.py")  # its imports are absent here
    status, out, err, found = _audit(str(copy), tmp_path)
    assert status == 1, err
    assert "a directory is read, not imported" in out
    from_source = {(key, line) for key, _, line in _flagged(found)}
    _, _, _, imported = _audit("examples/naive_app.py", tmp_path)
    assert from_source == {(key, line) for key, _, line in _flagged(imported)}


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no/such/app.py", "no/such/app.py: no such file"),
        ("tests/apps/audit_hidden.py:nope", "'nope' is not a Starlette or FastAPI app"),
        ("no_such_module_here:app", "cannot import no_such_module_here: ModuleNotFoundError"),
    ],
)
def test_bad_targets_get_one_clear_line(target: str, message: str, tmp_path: Path) -> None:
    status, out, err, _ = _audit(target, tmp_path)
    assert status == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert out == ""
