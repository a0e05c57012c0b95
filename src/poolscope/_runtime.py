"""Turning poolscope on and off: the patches each path installs, and their removal.

Two ways in:

* :func:`activate` (from ``poolscope.instrument()``): every pool on the chosen
  paths is recorded, named automatically unless the user named it.
* :func:`ensure_path` (from ``instrument_executor`` and friends, possibly
  before ``instrument()``): only the pools the user registered are recorded.

The hot paths read what this writes from ``_core._state``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import wrapt
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.dependencies import get_dependency_conflicts

from ._asgi import _starlette
from ._config import (
    PATH_ANTHROPIC,
    PATH_ANYIO,
    PATH_HTTP_CLIENTS,
    PATH_OPENAI,
    PATH_PROCESS_POOL,
    PATH_STARLETTE,
    PATH_THREAD_POOL,
    Settings,
)
from ._core import _background
from ._core._loop_monitor import stop_all
from ._core._patch import Patch, install
from ._core._state import bind, ensure_telemetry, lock, state
from ._core._telemetry import Telemetry
from ._http import _clients
from ._llm import _anthropic, _openai
from ._paths import _anyio, _process_pool, _thread_pool
from ._safety import logger, report_internal_error

__all__ = [
    "SUPPORTED",
    "Binding",
    "activate",
    "binding",
    "deactivate",
    "ensure_path",
    "ensure_telemetry",
    "is_active",
    "restore",
]

SUPPORTED: Final = {
    PATH_ANYIO: "anyio >= 4.4, < 5",
    PATH_STARLETTE: "starlette >= 0.40",
    PATH_OPENAI: "openai >= 1.40",
    PATH_ANTHROPIC: "anthropic >= 2.0, < 3",
}
"""The library each third-party path patches, and the versions it knows how to patch.
(The other paths patch the standard library.) A path whose library is absent has
nothing to patch; one whose library is outside its range is skipped, said once."""

_PATCHES: dict[str, Callable[[], list[Patch]]] = {
    PATH_OPENAI: _openai.patches,
    PATH_ANTHROPIC: _anthropic.patches,
    PATH_THREAD_POOL: _thread_pool.patches,
    PATH_PROCESS_POOL: _process_pool.patches,
    PATH_ANYIO: _anyio.patches,
    PATH_STARLETTE: _starlette.patches,
    PATH_HTTP_CLIENTS: _clients.patches,
}


def _supported(path: str) -> bool:
    requirement = SUPPORTED.get(path)
    if requirement is None:
        return True
    conflict = get_dependency_conflicts([requirement])
    if conflict is None:
        return True
    if conflict.found is not None:  # installed, at a version outside the range
        logger.warning(
            "poolscope: %s is installed, outside the versions poolscope supports (%s): "
            "the %r path is off",
            conflict.found,
            requirement,
            path,
        )
    return False


_WHEN_IMPORTED: Final = {PATH_OPENAI: "openai", PATH_ANTHROPIC: "anthropic"}
"""Paths patched only once the app imports their library: importing an SDK the
app never uses would cost it seconds at start-up and a heap that every
garbage collection walks (anthropic: 1 s and 160,000 objects)."""
_hooked: set[str] = set()


def _install(path: str) -> None:
    if path in state.patches:
        return
    module = _WHEN_IMPORTED.get(path)
    if module is not None and module not in sys.modules:
        if module not in _hooked:
            _hooked.add(module)
            wrapt.register_post_import_hook(functools.partial(_imported, path), module)
        return
    patches = _PATCHES[path]() if _supported(path) else []
    state.patches[path] = [install(patch) for patch in patches]


def _imported(path: str, module: object) -> None:
    """The app imported the library of ``path``: patch it, if poolscope still wants it."""
    try:
        with lock:
            telemetry = state.telemetry
            if telemetry is not None and path in telemetry.settings.paths:
                _install(path)
    except Exception:
        report_internal_error(f"patching {path} once imported")


def activate(
    settings: Settings,
    tracer_provider: trace.TracerProvider | None,
    meter_provider: metrics.MeterProvider | None,
) -> None:
    """Record every pool on ``settings.paths`` with the given providers."""
    with lock:
        bind(Telemetry(settings, tracer_provider, meter_provider))
        for path in settings.paths:
            _install(path)
        state.auto = settings.paths


def ensure_path(path: str) -> None:
    """Make sure pools the user registers on ``path`` are recorded."""
    with lock:
        ensure_telemetry()
        _install(path)


def deactivate() -> None:
    """Undo every patch and stop recording; in-flight tasks still balance their counts."""
    with lock:
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


@dataclass(frozen=True)
class Binding:
    """What poolscope records into, which paths it records automatically, and what it patched."""

    telemetry: Telemetry | None
    auto: frozenset[str]
    patched: frozenset[str]


def binding() -> Binding:
    with lock:
        return Binding(state.telemetry, state.auto, frozenset(state.patches))


def restore(earlier: Binding) -> None:
    """Back to ``earlier``: its telemetry and automatic paths, and none but its patches.

    For a recording that was switched on over whatever the app had (the tests'
    recorder): event-loop monitors started since are stopped, so none keeps
    recording into the telemetry being left; the serving loops start theirs
    again on their next request.
    """
    with lock:
        if earlier.telemetry is None:
            deactivate()
            return
        stop_all()
        bind(earlier.telemetry)
        state.auto = earlier.auto
        for path in sorted(set(state.patches) - earlier.patched):
            for patch in reversed(state.patches.pop(path)):
                patch.revert()
