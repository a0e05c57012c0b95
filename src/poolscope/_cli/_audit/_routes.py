"""The app half of ``poolscope audit``: which routes take a worker thread, from the app object.

Starlette runs every ``def`` endpoint in anyio's worker threads (40 tokens
shared by the whole process); FastAPI does the same for every sync
dependency, and validates the response model of a ``def`` endpoint in a
second thread. Only the routes as the app built them tell this for sure
(mounted sub-apps, routers included from other modules), so they are read
from the imported app, and each finding points at the function's ``def``.
"""

from __future__ import annotations

import ast
import functools
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._findings import SYNC_ROUTES, Finding

__all__ = ["RouteScan", "find_app", "scan_routes"]


@dataclass
class RouteScan:
    """What the app's routes do, and the source files they are defined in."""

    routes: int = 0
    findings: list[Finding] = field(default_factory=list)
    files: set[Path] = field(default_factory=set)


def find_app(namespace: dict[str, Any], attribute: str | None) -> tuple[str, Any] | None:
    """The Starlette (or FastAPI) app in a module's namespace: ``attribute``, else ``app``,
    else the only one there; unwrapped from ASGI middleware (``.app``) if need be."""
    from starlette.applications import Starlette

    def unwrap(value: Any) -> Any:
        for _ in range(20):
            if isinstance(value, Starlette):
                return value
            value = getattr(value, "app", None)
        return None

    if attribute is not None:
        value = unwrap(namespace.get(attribute))
        return (attribute, value) if value is not None else None
    if unwrap(namespace.get("app")) is not None:
        return "app", unwrap(namespace["app"])
    found = [(name, v) for name, v in namespace.items() if isinstance(v, Starlette)]
    return found[0] if len(found) == 1 else None


def _is_sync(call: Any) -> bool:
    """Runs in a worker thread: not a coroutine function (nor a callable object with one)."""
    while isinstance(call, functools.partial):
        call = call.func
    if inspect.isclass(call):
        return False  # a class-based endpoint: its methods are read one by one
    if not inspect.isfunction(call) and not inspect.ismethod(call) and callable(call):
        call = type(call).__call__
    return not (inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call))


@functools.cache
def _tree(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return None


def _where(function: Callable[..., Any]) -> tuple[Path, int] | None:
    """File and ``def`` (or ``class``) line of ``function``, not its first decorator's."""
    function = inspect.unwrap(function)
    try:
        path = Path(inspect.getsourcefile(function) or "")
        first = (
            inspect.getsourcelines(function)[1]
            if inspect.isclass(function)
            else function.__code__.co_firstlineno
        )
    except (TypeError, AttributeError, OSError):
        return None
    tree = _tree(path)
    if tree is not None:
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
                and node.name == function.__name__
                and min([node.lineno, *(d.lineno for d in node.decorator_list)]) == first
            ):
                return path, node.lineno
    return path, first


def _routes(routes: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for route in routes:
        path = prefix + str(getattr(route, "path", ""))
        nested = getattr(route, "routes", None)
        if nested is not None and not hasattr(route, "endpoint"):
            yield from _routes(nested, path)  # a Mount, a Host, a sub-router
        else:
            yield path, route


def _dependencies(dependant: Any) -> Iterator[Any]:
    for dependency in getattr(dependant, "dependencies", ()):
        yield dependency
        yield from _dependencies(dependency)


def _dependency_is_sync(call: Any) -> bool:
    """FastAPI runs a dependency in a worker thread unless it is a coroutine (or async
    generator) function: a class dependency is instantiated in one too."""
    return inspect.isclass(call) or _is_sync(call)


def _name(call: Any) -> str:
    return str(getattr(call, "__name__", type(call).__name__))


def scan_routes(app: Any) -> RouteScan:
    """Every sync endpoint, sync dependency and second seat for response validation."""
    scan = RouteScan()
    found: dict[tuple[Path, int, str], list[str]] = {}

    def find(function: Any, route: str, message: str) -> None:
        where = _where(function)
        if where is not None:
            scan.files.add(where[0])
            found.setdefault((*where, message), []).append(route)

    for path, route in _routes(app.routes):
        endpoint = getattr(route, "endpoint", None)
        if endpoint is None or getattr(route, "methods", None) is None:
            continue  # a websocket route
        scan.routes += 1
        label = f"{' '.join(sorted(m for m in route.methods if m != 'HEAD'))} {path}"
        dependant = getattr(route, "dependant", None)
        call = dependant.call if dependant is not None else endpoint
        if inspect.isclass(call):
            for method in sorted(route.methods):
                handler = getattr(call, method.lower(), None)
                if handler is not None and _is_sync(handler):
                    find(handler, label, f"`def {_name(handler)}` runs in a worker thread")
        else:
            where = _where(call)
            if where is not None:
                scan.files.add(where[0])
            if _is_sync(call):
                message = f"`def {_name(call)}` runs in a worker thread per request"
                if getattr(route, "response_field", None) is not None:
                    message += ", and FastAPI validates its response model in a second one"
                find(call, label, message)
        for dependency in _dependencies(dependant):
            used = dependency.call
            if used is not None and _dependency_is_sync(used):
                find(used, label, f"dependency `{_name(used)}` runs in a worker thread per request")
    for (file, line, message), routes in found.items():
        scan.findings.append(Finding(file, line, SYNC_ROUTES, f"{', '.join(routes)}: {message}"))
    return scan
