"""What a user installs: the sdist and wheel built by the standard tools, and the demo run from it.

The wheel goes into a clean venv (with the pinned constraints, like CI's own),
away from this checkout, and ``poolscope demo`` runs from there: the example
apps it serves must be inside the wheel, not read from the repository.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel, as ``python -m build`` makes them."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


def test_the_sdist_and_wheel_pass_twine_check(dist: Path) -> None:
    [sdist] = dist.glob("*.tar.gz")
    [wheel] = dist.glob("*.whl")
    done = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    names = set(zipfile.ZipFile(wheel).namelist())
    for wanted in (
        "poolscope/py.typed",
        "poolscope/_examples/naive_app.py",
        "poolscope/_examples/fixed_app.py",
        "poolscope/_examples/fake_llm.py",
    ):
        assert wanted in names
    [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    for line in (
        "poolscope = poolscope._cli._main:main",
        "poolscope = poolscope:PoolscopeInstrumentor",
        "poolscope = poolscope.pytest_plugin",
    ):
        assert line in text, text
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)


def test_the_installed_wheel_runs_the_demo(dist: Path, tmp_path: Path) -> None:
    [wheel] = dist.glob("*.whl")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-c",
            str(ROOT / "constraints.txt"),
            f"{wheel}[demo]",
        ],
        check=True,
        timeout=600,
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PYTHON"))}
    where = subprocess.run(
        [str(python), "-c", "import poolscope; print(poolscope.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env=clean,
    ).stdout.strip()
    assert Path(where).is_relative_to(env_dir), where  # the wheel's copy, not this checkout
    report, found = tmp_path / "report.html", tmp_path / "demo.json"
    done = subprocess.run(
        [
            str(env_dir / "bin" / "poolscope"),
            "demo",
            "--steps",
            "1,10",
            "--duration",
            "1",
            "--output",
            str(report),
            "--json",
            str(found),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=clean,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Diagnosis" in done.stdout
    assert report.stat().st_size > 10_000
    steps = json.loads(found.read_text())["steps"]
    # two apps, two scenarios each (async and sync routes), two loads each
    assert sorted((s["app"], s["scenario"], s["users"]) for s in steps) == sorted(
        (app, scenario, users)
        for app in ("naive", "fixed")
        for scenario in ("async routes", "sync routes")
        for users in (1, 10)
    )
    assert all(not s["failures"] and not s["unfinished"] for s in steps), steps
