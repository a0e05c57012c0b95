"""What is instrumented right now: the telemetry binding and the applied patches.

Two ways in:

* :func:`activate` (from ``poolscope.instrument()``): every pool on the chosen
  paths is recorded, named automatically unless the user named it.
* :func:`ensure_path` (from ``instrument_executor`` and friends, possibly
  before ``instrument()``): only the pools the user registered are recorded.

The hot path reads ``state.telemetry`` (``None`` means "call straight
through") and ``state.auto`` (paths whose unregistered pools get recorded too).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from opentelemetry import metrics, trace

from . import _background
from ._config import (
    PATH_ANYIO,
    PATH_OPENAI,
    PATH_PROCESS_POOL,
    PATH_STARLETTE,
    PATH_THREAD_POOL,
    Settings,
)
from ._loop_monitor import monitor_loop, stop_all
from ._patch import Patch, install
from ._pools import set_name_limit
from ._safety import report_internal_error
from ._telemetry import Telemetry

__all__ = [
    "activate",
    "deactivate",
    "ensure_path",
    "ensure_telemetry",
    "is_active",
    "on_serving_loop",
    "state",
]


class _State:
    __slots__ = ("auto", "patches", "telemetry")

    def __init__(self) -> None:
        self.telemetry: Telemetry | None = None
        self.auto: frozenset[str] = frozenset()
        self.patches: dict[str, list[Patch]] = {}


state = _State()
_lock = threading.RLock()


def _patch_factories() -> dict[str, Callable[[], list[Patch]]]:
    # Imported lazily: the path modules import this one for ``state``.
    from . import _anyio, _openai, _process_pool, _starlette, _thread_pool

    return {
        PATH_OPENAI: _openai.patches,
        PATH_THREAD_POOL: _thread_pool.patches,
        PATH_PROCESS_POOL: _process_pool.patches,
        PATH_ANYIO: _anyio.patches,
        PATH_STARLETTE: _starlette.patches,
    }


def _install(path: str) -> None:
    if path in state.patches:
        return
    state.patches[path] = [install(patch) for patch in _patch_factories()[path]()]


def activate(
    settings: Settings,
    tracer_provider: trace.TracerProvider | None,
    meter_provider: metrics.MeterProvider | None,
) -> None:
    """Record every pool on ``settings.paths`` with the given providers."""
    with _lock:
        state.telemetry = Telemetry(settings, tracer_provider, meter_provider)
        set_name_limit(settings.max_pool_names)
        _background.start()
        for path in settings.paths:
            _install(path)
        state.auto = settings.paths


def ensure_telemetry() -> None:
    """Bind to the global providers and environment settings unless already bound.

    The global providers may still be proxies that the application replaces
    later; the instruments follow them.
    """
    with _lock:
        if state.telemetry is None:
            state.telemetry = Telemetry(Settings.resolve())
            set_name_limit(state.telemetry.settings.max_pool_names)
            _background.start()


def ensure_path(path: str) -> None:
    """Make sure pools the user registers on ``path`` are recorded."""
    with _lock:
        ensure_telemetry()
        _install(path)


def on_serving_loop() -> None:
    """Called by the ASGI middleware on each request: monitor the serving loop once."""
    telemetry = state.telemetry
    if telemetry is None or not telemetry.settings.loop_monitor:
        return
    try:
        monitor_loop(telemetry)
    except Exception:
        report_internal_error("starting the event-loop monitor")


def deactivate() -> None:
    """Undo every patch and stop recording; in-flight tasks still balance their counts."""
    with _lock:
        stop_all()
        _background.stop()
        state.telemetry = None
        state.auto = frozenset()
        patches, state.patches = state.patches, {}
        for path_patches in patches.values():
            for patch in reversed(path_patches):
                patch.revert()


def is_active() -> bool:
    return state.telemetry is not None
