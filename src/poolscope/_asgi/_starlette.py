"""Every Starlette/FastAPI app gets the roll-up on its server span, with no code change.

This is what makes ``opentelemetry-instrument uvicorn app:app`` equal to
``poolscope.configure(app)``. Starlette builds its middleware stack lazily,
on the first request (or the lifespan startup); poolscope then:

* leaves an app that added ``PoolscopeMiddleware`` itself as it is;
* cooperates with a middleware the app added that makes the server span
  itself (Starlette's own ``OpenTelemetryMiddleware``, or OpenTelemetry's):
  that span stays the only one, with its exclusions, providers and choices
  (Starlette traces no websockets), and poolscope's roll-up goes inside it;
* wraps any other app in ``PoolscopeMiddleware``, outside Starlette's error
  middleware so error responses are inside the span. FastAPI's own telemetry
  and ``opentelemetry-instrumentation-fastapi`` make their span outside the
  stack; ``PoolscopeMiddleware`` then enriches it instead of making a second.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

from .._config import PATH_STARLETTE
from .._core import _state
from .._core._patch import Patch
from .._safety import logger, report_internal_error
from ._middleware import PoolscopeMiddleware, RollupMiddleware

__all__ = ["patches"]

_MAX_DEPTH = 64
"""How deep a middleware stack is searched for the span-making middleware."""


def _span_makers() -> tuple[type, ...]:
    """Middleware classes that make the server span themselves."""
    found = []
    for module, name in (
        ("starlette.middleware.opentelemetry", "OpenTelemetryMiddleware"),
        ("opentelemetry.instrumentation.asgi", "OpenTelemetryMiddleware"),
    ):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _added(app: Any, classes: tuple[type, ...]) -> bool:
    return any(
        isinstance(m.cls, type) and issubclass(m.cls, classes)
        for m in getattr(app, "user_middleware", ())
        if hasattr(m, "cls")
    )


def _roll_up_inside(stack: Any, makers: tuple[type, ...]) -> bool:
    """Put the roll-up right inside the outermost span-making middleware of ``stack``."""
    node: Any = stack
    for _ in range(_MAX_DEPTH):
        if node is None:
            return False
        if isinstance(node, makers):
            maker: Any = node
            maker.app = RollupMiddleware(maker.app)
            return True
        node = getattr(node, "app", None)
    return False


def _with_poolscope(app: Any, stack: Any) -> Any:
    if PATH_STARLETTE not in _state.state.auto or _added(app, (PoolscopeMiddleware,)):
        return stack
    makers = _span_makers()
    if _added(app, makers):
        if not _roll_up_inside(stack, makers):
            logger.warning(
                "poolscope: the app's OpenTelemetry middleware was not found in its "
                "middleware stack; its requests carry no wait roll-up"
            )
        return stack
    return PoolscopeMiddleware(stack)


def _wrap_build_middleware_stack(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    @functools.wraps(original)
    def build_middleware_stack(self: Any) -> Any:
        stack = original(self)
        try:
            return _with_poolscope(self, stack)
        except Exception:
            report_internal_error("adding poolscope to the middleware stack")
            return stack

    return build_middleware_stack


def patches() -> list[Patch]:
    try:
        starlette = importlib.import_module("starlette.applications").Starlette
    except ImportError:
        return []
    return [
        Patch(
            starlette,
            "build_middleware_stack",
            _wrap_build_middleware_stack(starlette.build_middleware_stack),
        )
    ]
