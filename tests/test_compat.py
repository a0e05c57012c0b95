"""The patched libraries' own test suites pass with poolscope on as they pass without it.

Each suite comes from the registries at the version ``constraints.txt`` pins:
CPython's ``test_concurrent_futures`` and ``test_asyncio.test_threads`` from
Debian's ``libpython3.11-testsuite`` (run by the Debian interpreter it belongs
to), and the tests shipped in the PyPI sdists of Starlette, anyio,
opentelemetry-instrumentation-asgi and FastAPI (its telemetry tests). Each runs
three times in its own venv (``tests/compat/constraints.txt`` pins the suites'
own test dependencies):
without poolscope (the baseline), then with ``poolscope.instrument()`` on with
its defaults and with every span it can make (``tests/compat/site``). A test
that fails with poolscope and not without it fails this tier, unless
docs/compatibility.md lists it as a deliberate difference, with the reason;
so does a run that altered CPython's test environment (a thread left behind)
when the baseline did not.

Downloads and venvs are cached under ``~/.cache/poolscope/compat`` by what
they depend on; poolscope itself comes from this checkout's ``src``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tools.stack import ROOT

pytestmark = pytest.mark.stack

CACHE = Path(os.environ.get("POOLSCOPE_CACHE", Path.home() / ".cache" / "poolscope")) / "compat"
SITE = ROOT / "tests" / "compat" / "site"
COMPAT_CONSTRAINTS = ROOT / "tests" / "compat" / "constraints.txt"
DIFFERENCES = ROOT / "docs" / "compatibility.md"
DEBIAN_PYTHON = Path("/usr/bin/python3.11")
RUN_TIMEOUT_S = 900
MODES = ("default", "spans")


@dataclass(frozen=True)
class Suite:
    name: str
    sdist: str | None
    """The PyPI project whose sdist holds the tests; None: CPython's, from Debian."""
    args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    plugins: tuple[str, ...] = ()
    """Test dependencies that would change how the other suites run (pytest plugins):
    the suite then runs in a venv of its own, with these."""
    needs: tuple[str, ...] = ()
    """Other test dependencies of a suite with a venv of its own (the shared venv keeps them)."""


SUITES = [
    Suite(
        "cpython",
        None,
        ("-m", "test", "test_concurrent_futures", "test_asyncio.test_threads"),
        {"POOLSCOPE_COMPAT_SITE": "1"},
    ),
    Suite("starlette", "starlette", ("-m", "pytest", "tests")),
    Suite(
        "anyio",
        "anyio",
        (
            "-m",
            "pytest",
            "tests/test_to_thread.py",
            "tests/test_from_thread.py",
            "tests/test_synchronization.py",
        ),
    ),
    Suite(
        "opentelemetry-instrumentation-asgi",
        "opentelemetry-instrumentation-asgi",
        ("-m", "pytest", "tests"),
        # PoolscopeMiddleware in place of the OpenTelemetryMiddleware the suite tests,
        # naming spans as upstream does: see docs/compatibility.md
        {"POOLSCOPE_COMPAT_ASGI": "1", "POOLSCOPE_COMPAT_UPSTREAM_NAMES": "1"},
    ),
    # FastAPI's own telemetry (0.163): its spans, its providers, its exclusions
    Suite("fastapi", "fastapi", ("-m", "pytest", "tests/test_telemetry")),
    # the anthropic SDK's own tracing, streams and client, against respx's mocks (its API
    # tests need a mock server of the API), one process: without its xdist options
    Suite(
        "anthropic",
        "anthropic",
        (
            "-m",
            "pytest",
            "-o",
            "addopts=-p tests._alias_httpx --tb=short",
            "tests/test_open_telemetry.py",
            "tests/test_tracing.py",
            "tests/test_streaming.py",
            "tests/test_client.py",
        ),
        plugins=(
            "respx",
            "pytest-asyncio",
            "time-machine",
            "http-snapshot[httpx]",
            "anthropic[aiohttp,bedrock,vertex]",  # its platform clients' tests too
        ),
    ),
    # the openai SDK's client, streams, raw and streaming responses and stream helpers,
    # against its own vendored respx; one process. Its Realtime/WebSocket tests need
    # websockets < 16, which our pins (17, for uvicorn) exclude: those files are left out
    Suite(
        "openai",
        "openai",
        (
            "-m",
            "pytest",
            "-o",
            "addopts=--tb=short",
            "--ignore-glob=*websocket*",
            "--ignore=tests/lib/responses/test_azure_responses_policy_regression.py",
            "--ignore=tests/lib/responses/test_parsed_output_replay_profile.py",
            "--ignore=tests/lib/responses/test_refusal_normal_lifecycle.py",
            "tests/test_client.py",
            "tests/test_streaming.py",
            "tests/test_response.py",
            "tests/test_legacy_response.py",
            "tests/lib/chat",
            "tests/lib/responses",
        ),
        plugins=("pytest-asyncio", "time-machine", "openai[aiohttp]"),
        needs=("trio", "rich"),
    ),
]


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        name, equals, version = line.partition("==")
        if equals and not line.startswith("#"):
            pins[_normalized(name.strip())] = version.strip()
    return pins


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.lower())


def _digest(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
    return digest.hexdigest()[:16]


def _pip(python: Path, *args: str) -> None:
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
        check=True,
        timeout=RUN_TIMEOUT_S,
    )


def _venv(base: str, requirements: list[str], label: str) -> Path:
    """A venv from ``base`` with ``requirements`` at the pinned versions, cached by all three."""
    constraints = (ROOT / "constraints.txt").read_bytes() + COMPAT_CONSTRAINTS.read_bytes()
    home = CACHE / f"{label}-{_digest(base, constraints, *requirements)}"
    python = home / "bin" / "python"
    if not (home / ".complete").exists():
        shutil.rmtree(home, ignore_errors=True)
        subprocess.run([base, "-m", "venv", str(home)], check=True, timeout=RUN_TIMEOUT_S)
        pins = ["-c", str(ROOT / "constraints.txt"), "-c", str(COMPAT_CONSTRAINTS)]
        _pip(python, *pins, *requirements)
        (home / ".complete").touch()
    return python


def _poolscope_requirements() -> list[str]:
    """What poolscope needs at run time, with the SDK the activation hook uses."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], "opentelemetry-sdk"]


def _sources(project: str) -> Path:
    """The project's sdist at the pinned version, downloaded once and unpacked."""
    version = _pins(ROOT / "constraints.txt")[project]
    unpacked = CACHE / "src" / f"{project}-{version}"
    if (unpacked / ".complete").exists():
        return unpacked
    downloads = CACHE / "sdists"
    downloads.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--no-binary", ":all:", f"{project}=={version}", "-d", str(downloads)],
        check=True,
        timeout=RUN_TIMEOUT_S,
    )  # fmt: skip
    wanted = _normalized(f"{project}-{version}")
    [archive] = [p for p in downloads.glob("*.tar.gz") if _normalized(p.name).startswith(wanted)]
    shutil.rmtree(unpacked, ignore_errors=True)
    with tarfile.open(archive) as tar:
        [top] = {name.split("/")[0] for name in tar.getnames()}
        tar.extractall(unpacked.parent, filter="data")
    (unpacked.parent / top).rename(unpacked)
    (unpacked / ".complete").touch()
    return unpacked


@dataclass
class Outcome:
    failed: set[str]
    total: int
    altered: bool
    output: str

    def summary(self) -> dict[str, int | bool]:
        return {
            "tests": self.total,
            "failed": len(self.failed),
            "altered_environment": self.altered,
        }


def _outcome(report: Path, output: str) -> Outcome:
    failed = set()
    total = 0
    for case in ET.parse(report).iter("testcase"):
        total += 1
        if any(child.tag in ("failure", "error") for child in case):
            failed.add(f"{case.get('classname')}::{case.get('name')}")
    return Outcome(failed, total, "altered the execution environment" in output, output[-3000:])


def _run(suite: Suite, python: Path, cwd: Path, mode: str | None, report: Path) -> Outcome:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "POOLSCOPE_COMPAT", "PYTEST_"))
    }
    env.update(suite.env)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(SITE)])
    if mode is not None:
        env["POOLSCOPE_COMPAT_MODE"] = mode
    args = list(suite.args)
    if args[:2] == ["-m", "pytest"]:
        args += ["-p", "no:cacheprovider", "-p", "poolscope_compat", f"--junitxml={report}"]
    else:
        args += ["--junit-xml", str(report)]
    result = subprocess.run(
        [str(python), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert report.exists(), (
        f"{suite.name} ({mode or 'baseline'}) wrote no report:\n"
        + (result.stdout + result.stderr)[-3000:]
    )
    return _outcome(report, result.stdout + result.stderr)


def deliberate_differences() -> dict[str, list[tuple[str, str]]]:
    """Suite -> [(test id pattern, why)], from the table in docs/compatibility.md."""
    found: dict[str, list[tuple[str, str]]] = {}
    for line in DIFFERENCES.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1].startswith("`") and cells[1].endswith("`"):
            found.setdefault(cells[0].strip("`"), []).append((cells[1].strip("`"), cells[2]))
    return found


@pytest.fixture(scope="module")
def interpreters() -> dict[str, Path]:
    if (
        not DEBIAN_PYTHON.exists()
        or not Path("/usr/lib/python3.11/test/test_concurrent_futures.py").exists()
    ):
        message = "Debian's python3.11 and libpython3.11-testsuite are needed"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    requirements = _poolscope_requirements()
    return {
        "debian": _venv(str(DEBIAN_PYTHON), requirements, "debian-venv"),
        "suites": _venv(
            getattr(sys, "_base_executable", sys.executable),
            [
                *requirements,
                *(suite.sdist for suite in SUITES if suite.sdist and not suite.plugins),
                *(name for name in _pins(COMPAT_CONSTRAINTS) if name not in _plugin_projects()),
                "pytest",
                "hypothesis",
                "uvloop",
                "httpx",
                "pyyaml",
                # what FastAPI's telemetry tests import
                "opentelemetry-instrumentation-fastapi",
                "opentelemetry-exporter-otlp-proto-http",
                "logfire",
                "sentry-sdk",
                "dirty-equals",
                "inline-snapshot",
            ],
            "suites-venv",
        ),
    }


def _plugin_projects() -> set[str]:
    return {_normalized(plugin.split("[")[0]) for suite in SUITES for plugin in suite.plugins}


def _own_venv(suite: Suite) -> Path:
    """The venv of a suite whose plugins the others must not see."""
    assert suite.sdist is not None
    requirements = [*_poolscope_requirements(), suite.sdist, "pytest", "hypothesis"]
    return _venv(
        getattr(sys, "_base_executable", sys.executable),
        [*requirements, *suite.plugins, *suite.needs, "dirty-equals", "inline-snapshot"],
        f"{suite.name}-venv",
    )


@pytest.mark.parametrize("suite", SUITES, ids=[suite.name for suite in SUITES])
def test_the_suite_passes_with_poolscope_as_without(
    suite: Suite, interpreters: dict[str, Path], tmp_path: Path
) -> None:
    if suite.sdist is None:
        python, cwd = interpreters["debian"], tmp_path
    elif suite.plugins:
        python, cwd = _own_venv(suite), _sources(suite.sdist)
    else:
        python, cwd = interpreters["suites"], _sources(suite.sdist)
    baseline = _run(suite, python, cwd, None, tmp_path / "baseline.xml")
    assert baseline.total > 0, baseline.output
    allowed = deliberate_differences().get(suite.name, [])
    problems = []
    summary = {"baseline": baseline.summary()}
    for mode in MODES:
        found = _run(suite, python, cwd, mode, tmp_path / f"{mode}.xml")
        summary[mode] = found.summary()
        new = sorted(
            test
            for test in found.failed - baseline.failed
            if not any(fnmatch.fnmatchcase(test, pattern) for pattern, _ in allowed)
        )
        if new:
            problems.append(f"{mode}: fail only with poolscope: {new}")
        if found.altered and not baseline.altered:
            problems.append(f"{mode}: altered the test environment:\n{found.output}")
        if found.total != baseline.total:
            problems.append(f"{mode}: ran {found.total} tests, the baseline {baseline.total}")
    # the figures of the last run, per suite, for docs and notes
    (CACHE / "results").mkdir(parents=True, exist_ok=True)
    (CACHE / "results" / f"{suite.name}.json").write_text(json.dumps(summary, indent=2))
    assert not problems, "\n".join(problems)
