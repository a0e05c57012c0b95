"""Every Starlette/FastAPI app gets ``PoolscopeMiddleware``, with no code change.

This is what makes ``opentelemetry-instrument uvicorn app:app`` equal to
``poolscope.configure(app)``: the middleware stack Starlette builds (lazily,
on the first request) is wrapped in ``PoolscopeMiddleware``, outside
Starlette's error middleware so error responses are inside the span. With
``opentelemetry-instrumentation-fastapi`` also active, its middleware wraps
ours, and ours enriches its server span instead of making a second one. Apps
that added ``PoolscopeMiddleware`` themselves are left as they are.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

from . import _runtime
from ._asgi import PoolscopeMiddleware
from ._config import PATH_STARLETTE
from ._patch import Patch

__all__ = ["patches"]


def _has_poolscope(app: Any) -> bool:
    return any(
        getattr(m, "cls", None) is PoolscopeMiddleware for m in getattr(app, "user_middleware", ())
    )


def _wrap_build_middleware_stack(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    @functools.wraps(original)
    def build_middleware_stack(self: Any) -> Any:
        stack = original(self)
        if PATH_STARLETTE not in _runtime.state.auto or _has_poolscope(self):
            return stack
        return PoolscopeMiddleware(stack)

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
