"""``poolscope load``: the user's own running app under rising load, its pools read meanwhile.

The demo's probe (``_probe``) pointed at any URL: closed-loop GETs on the
given paths at each concurrency, every user on its own keep-alive
connection, while the app's poolscope metrics are read from its Prometheus
endpoint. An app without poolscope (or whose endpoint cannot be read) still
gets its latency against concurrency, and the report says the pools were not
visible instead of guessing at them.

Everything that can be wrong with the input is found before the first step:
an unreachable app, a path that does not answer 200, a ``--metrics`` URL
without poolscope's metrics.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TextIO

from .._analysis import _readings
from .._errors import ConfigurationError
from .._sdk._configure import ENV_PROMETHEUS_PORT
from ._probe._drive import Progress, diagnose_run, drive, stop_on_signals
from ._probe._model import ProbeRun, ProbeSettings, Scenario, Target, results
from ._probe._report import escape, machine_note, page, print_results, verdict_lines

__all__ = [
    "DEFAULT_METRICS_PORT",
    "LoadSettings",
    "default_metrics",
    "find_target",
    "run_load",
]

DEFAULT_METRICS_PORT: Final = 9464
"""The OpenTelemetry Prometheus exporter's port, where ``top`` and ``diagnose`` look too."""
_CHECK_TIMEOUT_S: Final = 30.0
TITLE: Final = "poolscope load"


@dataclass(frozen=True)
class LoadSettings(ProbeSettings):
    url: str = ""
    paths: tuple[str, ...] = ("/",)
    metrics: str | None = None
    """Where the app's poolscope metrics are; None: its own port (see :func:`default_metrics`)."""

    def check(self) -> None:
        super().check()
        _check_base("URL", self.url)
        bad = [p for p in self.paths if not p.startswith("/")]
        if not self.paths or bad:
            given = ",".join(self.paths)
            raise ConfigurationError(
                f"--paths must be absolute paths such as /chat,/search, got {given!r}"
            )
        if self.metrics is not None:
            _check_base("--metrics", self.metrics)
            if _readings.is_prometheus_server(self.metrics):
                raise ConfigurationError(
                    f"--metrics must be the app's own endpoint, ending in /metrics, got "
                    f"{self.metrics!r}"
                )


def _check_base(flag: str, url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        parts = parts._replace(netloc="")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"{flag} must be an http:// or https:// URL such as http://127.0.0.1:8000, got {url!r}"
        )


def default_metrics(url: str, env: dict[str, str] | None = None) -> str:
    """The app's endpoint: its host, on ``OTEL_POOLSCOPE_PROMETHEUS_PORT`` (else 9464)."""
    environ = os.environ if env is None else env
    port = environ.get(ENV_PROMETHEUS_PORT, "").strip() or str(DEFAULT_METRICS_PORT)
    host = urllib.parse.urlsplit(url).hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/metrics"


def _check_paths(url: str, paths: tuple[str, ...]) -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=_CHECK_TIMEOUT_S) as client:
        for path in paths:
            where = url.rstrip("/") + path
            try:
                response = client.get(path)
            except httpx.TimeoutException:
                raise ConfigurationError(
                    f"GET {where} got no answer in {_CHECK_TIMEOUT_S:g} s"
                ) from None
            except httpx.HTTPError as error:
                raise ConfigurationError(
                    f"cannot reach {where}: {error or type(error).__name__}; is the app running?"
                ) from None
            if response.status_code != 200:
                raise ConfigurationError(
                    f"GET {where} answered {response.status_code} {response.reason_phrase}: "
                    "--paths takes routes that answer 200 to a GET"
                )


def _has_poolscope(snapshot: _readings.Snapshot) -> bool:
    processes = snapshot.processes.values()
    return bool(snapshot.pools) or any(
        p.cpu is not None or p.loop_active is not None for p in processes
    )


def find_target(settings: LoadSettings) -> Target:
    """The app to load, once it has answered every path; where its pools are, if anywhere."""
    _check_paths(settings.url, settings.paths)
    scenario = Scenario(
        "GET " + ",".join(settings.paths),
        "closed-loop GETs, every user on its own keep-alive connection, user n on path n "
        "modulo the number of paths",
        settings.paths,
    )
    url = settings.metrics or default_metrics(settings.url)
    name = settings.url
    try:
        snapshot = _readings.read(url)
    except _readings.SourceError as error:
        if settings.metrics is not None:
            raise ConfigurationError(f"--metrics: {error}") from None
        blind = f"no poolscope metrics at {url}: {error}"
        return Target("app", name, settings.url, None, (scenario,), blind)
    if not _has_poolscope(snapshot):
        blind = f"{url} answers, but without poolscope's metrics"
        if settings.metrics is not None:
            raise ConfigurationError(
                f"--metrics: {blind}; is poolscope.configure() running in the app, with "
                f"{ENV_PROMETHEUS_PORT} set to that port?"
            )
        return Target("app", name, settings.url, None, (scenario,), blind)
    services = {r.service for r in snapshot.pools.values() if r.service}
    services |= {r.service for r in snapshot.processes.values() if r.service}
    if len(services) == 1:
        name = f"{services.pop()} ({settings.url})"
    return Target("app", name, settings.url, url, (scenario,))


def run_load(
    settings: LoadSettings, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> ProbeRun:
    """Probe the app; print the table and the verdicts; write the report."""
    settings.check()
    target = find_target(settings)
    where = target.metrics or "nowhere: pools not visible"
    err.write(f"poolscope load: {settings.url}, pools read from {where}\n")
    progress = Progress(err)
    run = ProbeRun(settings, {target.key: target}, started=time.monotonic())
    with stop_on_signals():
        asyncio.run(drive(run, progress))
    progress.finish()
    run.elapsed = time.monotonic() - run.started
    diagnose_run(run)
    lines = [*verdict_lines(run), machine_note(run)]
    if settings.json_output is not None:
        settings.json_output.write_text(json.dumps(results(run), indent=2) + "\n")
    print_results(run, lines, out)
    intro = (
        f"<p>{escape(settings.url)} on {escape(', '.join(settings.paths))}, "
        f"{settings.step_seconds:g} s per step at {', '.join(map(str, settings.steps))} "
        f"concurrent users, in {run.elapsed:.0f} s. Every figure below comes from this run.</p>"
    )
    Path(settings.output).write_text(page(run, TITLE, intro, lines), encoding="utf-8")
    out.write(f"\nReport: {settings.output.resolve()}\n")
    return run
