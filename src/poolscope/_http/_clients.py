"""Where each HTTP client library sends one request, and what poolscope reads there.

Each hook sits where OpenTelemetry's instrumentation of the library has its
span current, whichever was installed first: one layer beneath it
(``requests``' adapter under ``Session.send``, urllib's handler under
``OpenerDirector.open``), or the same function, inside its wrapt wrapper
(``urllib3``'s ``urlopen``, ``httpx``' transport).
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, Final, NamedTuple

from .._core._patch import Patch, inside_instrumentation
from ._call import Describe, StatusOf, recorded

__all__ = ["patches"]


def _requests(_adapter: Any, request: Any, *args: Any, **kwargs: Any) -> tuple[str, str]:
    return str(request.method), str(request.url)


def _urllib(_handler: Any, _http_class: Any, request: Any, **kwargs: Any) -> tuple[str, str]:
    return str(request.get_method()), str(request.full_url)


def _urllib3(pool: Any, method: str, url: str, *args: Any, **kwargs: Any) -> tuple[str, str]:
    if url.startswith("/"):  # the pool's own host; a proxy pool is given absolute URLs
        url = f"{pool.scheme}://{pool.host}:{pool.port}{url}"
    return str(method), url


def _httpx(_transport: Any, request: Any) -> tuple[str, str]:
    return str(request.method), str(request.url)


def _status_code(response: Any) -> int | None:
    value = getattr(response, "status_code", None)
    return value if isinstance(value, int) else None


def _status(response: Any) -> int | None:
    value = getattr(response, "status", None)
    return value if isinstance(value, int) else None


class _Hook(NamedTuple):
    library: str
    """``executor.io.library``."""
    module: str
    owner: str
    method: str
    describe: Describe
    status_of: StatusOf
    inside_opentelemetry: bool
    """Hooked on the function OpenTelemetry's instrumentation wraps (inside its wrapper)."""


_HOOKS: Final = (
    _Hook("requests", "requests.adapters", "HTTPAdapter", "send", _requests, _status_code, False),
    _Hook("urllib", "urllib.request", "AbstractHTTPHandler", "do_open", _urllib, _status, False),
    _Hook(
        "urllib3",
        "urllib3.connectionpool",
        "HTTPConnectionPool",
        "urlopen",
        _urllib3,
        _status,
        True,
    ),
    _Hook("httpx", "httpx", "HTTPTransport", "handle_request", _httpx, _status_code, True),
    _Hook("httpx2", "httpx2", "HTTPTransport", "handle_request", _httpx, _status_code, True),
)


def patches() -> list[Patch]:
    found: list[Patch] = []
    for hook in _HOOKS:
        try:
            owner = getattr(importlib.import_module(hook.module), hook.owner)
        except (ImportError, AttributeError):
            continue  # not installed here
        if hook.method not in vars(owner):
            continue
        wrap = functools.partial(
            recorded, library=hook.library, describe=hook.describe, status_of=hook.status_of
        )
        if hook.inside_opentelemetry:
            found.append(inside_instrumentation(owner, hook.method, wrap))
        else:
            found.append(Patch(owner, hook.method, wrap(vars(owner)[hook.method])))
    return found
