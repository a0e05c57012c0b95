"""``http.route``: the route template a request matched, never the raw path.

Matched at the start of the request against the Starlette/FastAPI app's
routes (descending into mounts), so the template is on the server span and on
OpenTelemetry's request-duration metric from the first moment. Raw paths
(``/items/42``) would make every URL its own span name and metric series.

Only routes that match with Starlette's or FastAPI's own ``matches`` are
asked: those are pure functions of the request. A route class with its own
``matches`` (the application's code, which may count or log) is asked once,
by the router; the template then comes from the route the router recorded,
at the end of the request, and names the span only.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any, Final

from .. import semconv

__all__ = ["route_template", "span_details", "span_method"]

_MAX_DEPTH = 8


class _OwnMatching(Exception):
    """A route with its own ``matches``: not ours to call."""


_STOCK_MODULES: Final = frozenset({"starlette.routing", "fastapi.routing"})
"""Where the ``matches`` of Starlette's and FastAPI's own route classes are defined."""


def _stock(route: Any) -> bool:
    return getattr(type(route).matches, "__module__", None) in _STOCK_MODULES


def route_template(app: Any, scope: MutableMapping[str, Any]) -> str | None:
    """The template of the route ``scope`` would reach in ``app``, or None."""
    routes = getattr(app, "routes", None)
    if routes is None:
        return None
    try:
        return _match(routes, dict(scope), "", 0)
    except Exception:  # a router we do not understand, or a route with its own matching
        return None


def _match(routes: Iterable[Any], scope: dict[str, Any], prefix: str, depth: int) -> str | None:
    from starlette.routing import Match

    partial: str | None = None
    for route in routes:
        if not _stock(route):
            raise _OwnMatching
        match, child_scope = route.matches(scope)
        if match is Match.NONE:
            continue
        path = prefix + str(getattr(route, "path", ""))
        children = getattr(route, "routes", None)
        if children and depth < _MAX_DEPTH:  # a Mount: keep matching inside
            inner = _match(children, {**scope, **child_scope}, path, depth + 1)
            if inner is not None:
                return inner
            continue
        if match is Match.FULL:
            return path
        partial = partial or path  # e.g. the right path with the wrong method
    return partial


_KNOWN_METHODS: Final = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)


def span_method(scope: MutableMapping[str, Any]) -> str:
    """The method part of a span name: a client's made-up method is not a name."""
    method = str(scope.get("method", "")).upper()
    return method if method in _KNOWN_METHODS else "HTTP"  # as the conventions name it


def span_details(app: Any, scope: MutableMapping[str, Any]) -> tuple[str, dict[str, str]]:
    """Span name ``{method} {route}`` and the ``http.route`` attribute, per the HTTP conventions."""
    method = span_method(scope)
    template = route_template(scope.get("app") or app, scope)
    if template is None:
        return method, {}
    return f"{method} {template}", {semconv.ATTR_HTTP_ROUTE: template}
