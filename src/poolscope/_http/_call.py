"""One blocking HTTP call made on a pool's worker: its span, its metric, the roll-up.

Only calls on a worker are recorded (an async client, or a sync one on the
event loop, holds no worker: the loop monitor sees the latter). A call inside
another blocking call (an LLM SDK's own request, urllib3 beneath ``requests``,
a redirect) is part of that call, not one of its own.

The span follows the HTTP client conventions: named after the method, with
``http.request.method``, ``server.address``, ``server.port``, ``url.full``
(credentials and query values redacted unless ``capture_request_details``),
``http.response.status_code`` and ``error.type``; plus ``executor.name`` and
``executor.io.library``. When OpenTelemetry's instrumentation of the library
already made the call's span, that span is the only one, and gets
``executor.name``. No trace context is injected into the request: a header
poolscope adds would change what the host sends.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit

from opentelemetry import context, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from .. import semconv
from .._config import PATH_HTTP_CLIENTS
from .._core import _state
from .._core._recorder import record
from .._core._task import Task, blocking_call, current_task, error_type, mark_error
from .._core._telemetry import context_inside
from .._redaction import telemetry_url
from .._safety import report_internal_error

__all__ = ["HTTP_CALL", "MAX_SERVERS", "Describe", "StatusOf", "recorded"]

HTTP_CALL: Final = "http"
"""What :data:`~poolscope._core._task.blocking_call` says inside a blocking HTTP call."""

MAX_SERVERS: Final = 100
"""Distinct ``server.address`` values the metric may carry; later servers count as ``other``."""

_METHODS: Final = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"}
)
_OTHER_METHOD: Final = "_OTHER"
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}

_servers: set[str] = set()
_servers_lock = threading.Lock()

Describe = Callable[..., tuple[str, str]]
"""``(method, url)`` of the call, from the wrapped function's arguments."""
StatusOf = Callable[[Any], int | None]
"""The response's status code, from what the wrapped function returned."""


def _bounded_server(address: str) -> str:
    if address in _servers:
        return address
    with _servers_lock:
        if len(_servers) < MAX_SERVERS:
            _servers.add(address)
            return address
    return semconv.POOL_OTHER


def _made_by_other_instrumentation(span: Span) -> bool:
    """The CLIENT span of this HTTP call, made by OpenTelemetry's instrumentation of its library."""
    if not span.is_recording() or getattr(span, "kind", None) is not SpanKind.CLIENT:
        return False
    attributes = getattr(span, "attributes", None) or {}
    return (
        semconv.ATTR_HTTP_REQUEST_METHOD in attributes or semconv.ATTR_HTTP_METHOD_OLD in attributes
    ) and semconv.ATTR_GEN_AI_OPERATION_NAME not in attributes


class _Call:
    __slots__ = ("attributes", "inside", "span", "started", "task", "token")

    def __init__(self, task: Task, library: str, method: str, url: str) -> None:
        self.started = time.monotonic_ns()
        self.task = task
        self.span: Span | None = None
        self.token: object | None = None
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 0)
        method = method.upper()
        method = method if method in _METHODS else _OTHER_METHOD
        self.attributes: dict[str, Any] = {
            semconv.ATTR_EXECUTOR_NAME: task.pool.attributes[semconv.ATTR_EXECUTOR_NAME],
            semconv.ATTR_EXECUTOR_IO_LIBRARY: library,
            semconv.ATTR_HTTP_REQUEST_METHOD: method,
            semconv.ATTR_SERVER_ADDRESS: _bounded_server(host),
            semconv.ATTR_SERVER_PORT: port,
        }
        current = trace.get_current_span()
        if _made_by_other_instrumentation(current):
            current.set_attribute(semconv.ATTR_EXECUTOR_NAME, task.pool.name)
        elif task.traced:
            self._start_span(library, method, url, host, port)
        self.inside = blocking_call.set(HTTP_CALL)  # last: nothing above may leave it set

    def _start_span(self, library: str, method: str, url: str, host: str, port: int) -> None:
        task = self.task
        telemetry = task.telemetry
        self.span = telemetry.tracer.start_span(
            "HTTP" if method == _OTHER_METHOD else method,
            kind=SpanKind.CLIENT,
            attributes={
                semconv.ATTR_HTTP_REQUEST_METHOD: method,
                semconv.ATTR_SERVER_ADDRESS: host,
                semconv.ATTR_SERVER_PORT: port,
                semconv.ATTR_URL_FULL: telemetry_url(
                    url, keep_query=telemetry.settings.capture_request_details
                ),
                semconv.ATTR_EXECUTOR_NAME: task.pool.name,
                semconv.ATTR_EXECUTOR_IO_LIBRARY: library,
            },
        )
        # current inside, for an instrumentation of a library beneath (urllib3 under requests)
        self.token = context.attach(context_inside(self.span, None))

    def end(self, status: int | None, exc: BaseException | None) -> None:
        ended = time.monotonic_ns()
        blocking_call.reset(self.inside)
        if self.token is not None:
            context.detach(self.token)  # type: ignore[arg-type]
        failure = error_type(exc) if exc is not None else None
        if failure is None and status is not None and status >= 400:
            failure = str(status)
        attributes = self.attributes
        if failure is not None:
            attributes[semconv.ATTR_ERROR_TYPE] = failure
        span = self.span
        if span is not None:
            if status is not None:
                span.set_attribute(semconv.ATTR_HTTP_RESPONSE_STATUS_CODE, status)
            if exc is not None:
                mark_error(span, exc)
            elif failure is not None:
                span.set_attribute(semconv.ATTR_ERROR_TYPE, failure)
                span.set_status(Status(StatusCode.ERROR))
            span.end()
        exemplar = trace.set_span_in_context(span) if span is not None else None
        held = ended - self.started
        record(self.task.telemetry.histograms.io, held / 1e9, attributes, exemplar)
        rollup = self.task.rollup
        if rollup is not None:
            rollup.add_pinned_io(held)


def _begin(library: str, describe: Describe, args: Any, kwargs: Any) -> _Call | None:
    task = current_task.get()
    if task is None or blocking_call.get() is not None:
        return None
    if PATH_HTTP_CLIENTS not in _state.state.auto:
        return None
    try:
        method, url = describe(*args, **kwargs)
        return _Call(task, library, method, url)
    except Exception:
        report_internal_error(f"starting a {library} call")
        return None


def _end(call: _Call, status_of: StatusOf, result: Any, exc: BaseException | None) -> None:
    try:
        call.end(None if exc is not None else status_of(result), exc)
    except Exception:
        report_internal_error("ending an HTTP call")


def recorded(
    original: Callable[..., Any], library: str, describe: Describe, status_of: StatusOf
) -> Callable[..., Any]:
    """``original`` (a library's sync send), recording each call made on a pool's worker."""

    @functools.wraps(original)
    def send(*args: Any, **kwargs: Any) -> Any:
        call = _begin(library, describe, args, kwargs)
        if call is None:
            return original(*args, **kwargs)
        try:
            result = original(*args, **kwargs)
        except BaseException as exc:
            _end(call, status_of, None, exc)
            raise
        _end(call, status_of, result, None)
        return result

    return send
