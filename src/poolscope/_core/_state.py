"""What every hot path reads: the telemetry binding and the paths recorded automatically.

``state.telemetry`` is ``None`` when poolscope is off: a patched call then goes
straight through. ``state.auto`` names the paths whose unregistered pools are
recorded too. ``_runtime`` (which installs the patches) writes this state; the
recording code only reads it, so it never imports what installs it.
"""

from __future__ import annotations

import threading

from .._config import Settings
from .._safety import report_internal_error
from . import _background
from ._loop_monitor import monitor_loop
from ._patch import Patch
from ._pools import set_name_limit
from ._telemetry import Telemetry

__all__ = ["bind", "ensure_telemetry", "lock", "on_serving_loop", "state"]


class _State:
    __slots__ = ("auto", "patches", "telemetry")

    def __init__(self) -> None:
        self.telemetry: Telemetry | None = None
        self.auto: frozenset[str] = frozenset()
        self.patches: dict[str, list[Patch]] = {}


state = _State()
lock = threading.RLock()
"""Held while the state changes (instrument, uninstrument, a first binding)."""


def bind(telemetry: Telemetry) -> None:
    """Record into ``telemetry`` from now on; the background thread runs the jobs."""
    with lock:
        state.telemetry = telemetry
        set_name_limit(telemetry.settings.max_pool_names)
        _background.start()


def ensure_telemetry() -> None:
    """Bind to the global providers and environment settings unless already bound.

    The global providers may still be proxies that the application replaces
    later; the instruments follow them.
    """
    with lock:
        if state.telemetry is None:
            bind(Telemetry(Settings.resolve()))


def on_serving_loop() -> None:
    """Called by the ASGI middleware on each request: monitor the serving loop once."""
    telemetry = state.telemetry
    if telemetry is None or not telemetry.settings.loop_monitor:
        return
    try:
        monitor_loop(telemetry)
    except Exception:
        report_internal_error("starting the event-loop monitor")
