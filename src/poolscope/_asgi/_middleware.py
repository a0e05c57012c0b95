"""``PoolscopeMiddleware``: OpenTelemetry's ASGI server span, plus where the request waited.

Built on ``opentelemetry-instrumentation-asgi``'s ``OpenTelemetryMiddleware``
(the server span, HTTP attributes and metrics are OpenTelemetry's), with:

* the roll-up of the request's queue waits on the server span:
  ``executor.wait.total``, ``executor.wait.max``, ``executor.task.count``
  (and ``executor.spans.dropped`` when the span budget ran out);
* ``http.route`` as the route template, and the span named ``{method} {route}``;
* the event-loop monitor started on the serving loop;
* the values of the query string replaced with ``REDACTED`` on the server
  span, unless ``capture_request_details``: a query string often carries a
  prompt, an e-mail address or a token. On its own span, and on a span
  another maker (Starlette's or FastAPI's own telemetry) records into
  poolscope's tracer provider; a span of another provider is left as its
  maker recorded it. The User-Agent stays, as the HTTP conventions recommend
  (``user_agent.original``);
* the request's route on the spans of the tasks it hands to a pool.

If a server span is already current (Starlette's or FastAPI's own telemetry,
``opentelemetry-instrumentation-fastapi``, an ``OpenTelemetryMiddleware``
outside this one), no second span is made: that span gets the roll-up, and
keeps its name and route, which its maker sets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Final

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.trace import Span, SpanKind

from .. import semconv
from .._config import NOT_GIVEN, Settings
from .._core import _state
from .._core._rollup import RequestRollup, current_rollup
from .._core._telemetry import exported_by
from .._errors import ConfigurationError
from .._redaction import redact_query
from .._safety import logger, report_internal_error
from ._route import route_template, span_details, span_method

__all__ = [
    "PoolscopeMiddleware",
    "RollupMiddleware",
    "redacted",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _is_server_span(span: Span) -> bool:
    return span.is_recording() and getattr(span, "kind", None) is SpanKind.SERVER


class _RollupApp:
    """Inner ASGI app: opens the roll-up, runs the app, writes it on the server span.

    ``names_span``: the span is our own OpenTelemetryMiddleware's, so a route
    learnt only while routing names it; someone else's span keeps its name.
    """

    def __init__(
        self,
        app: ASGIApp,
        span_budget: int | None,
        standalone: Settings,
        *,
        names_span: bool = True,
        owns_span: bool = True,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.app = app
        self.span_budget = span_budget
        self.standalone = standalone  # when poolscope.instrument() is not active
        self.names_span = names_span
        self.owns_span = owns_span
        self.tracer_provider = tracer_provider  # likewise

    def settings(self) -> Settings:
        telemetry = _state.state.telemetry
        return telemetry.settings if telemetry else self.standalone

    def provider(self) -> trace.TracerProvider | None:
        """The tracer provider poolscope records into (None: the global one)."""
        telemetry = _state.state.telemetry
        if telemetry is not None:
            return telemetry.tracer_provider
        return self.tracer_provider

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or current_rollup.get() is not None:
            # A websocket's span (if any) carries no roll-up; or another
            # PoolscopeMiddleware outside this one already rolls up.
            await self.app(scope, receive, send)
            return
        found = trace.get_current_span()
        settings = self.settings()
        span: Span | None = None  # the server span the roll-up goes on
        route = None
        name_at_end = False
        if _is_server_span(found):
            span = found
            attributes = _attributes_of(span)
            if not settings.capture_request_details and scope.get("query_string"):
                # poolscope's pipeline redacts; a span another provider makes (Starlette's
                # middleware given its own) keeps what its maker chose to record. Without
                # a query string there is nothing the client sent to redact.
                _redact_safely(span, attributes, self.provider(), self.owns_span)
            named = isinstance(attributes.get(semconv.ATTR_HTTP_ROUTE), str)
            name_at_end = self.names_span and not named
            route = _route_safely(attributes, self.app, scope)
        elif _sampled_out(found) and not settings.root_spans:
            # The request's trace is sampled out: the spans inside it are too (under
            # the usual parent-based sampler), so there is no roll-up to write and no
            # span budget to keep. (With no span at all, spans the app starts inside
            # may be recorded, and still get the budget.)
            await self.app(scope, receive, send)
            return
        budget = self.span_budget
        if budget is None:
            budget = settings.max_spans_per_request
        rollup = RequestRollup(budget, route)

        written = False

        async def send_and_write(message: Message) -> None:
            # OpenTelemetry ends the server span right after the last body
            # message; the roll-up must be on it by then.
            nonlocal written
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                written = True
                _write_safely(span, rollup, scope, name_at_end)
            await send(message)

        token = current_rollup.set(rollup)
        try:
            await self.app(scope, receive, send_and_write)
        finally:
            current_rollup.reset(token)
            if not written:  # no complete body sent (error, disconnect): write now
                _write_safely(span, rollup, scope, name_at_end)


def _sampled_out(span: Span) -> bool:
    return span.get_span_context().is_valid and not span.is_recording()


def _attributes_of(span: Span) -> Mapping[str, Any]:
    """The span's attributes as they are now (an SDK span's; other spans show none)."""
    try:
        attributes = getattr(span, "attributes", None)
        return {} if attributes is None else attributes  # no `or`: asking a mapping's length costs
    except Exception:
        report_internal_error("reading the server span")
        return {}


def _route_safely(attributes: Mapping[str, Any], app: ASGIApp, scope: Scope) -> str | None:
    """The request's route template: the server span's, else matched now (Starlette's
    own middleware and FastAPI's name the route only when the request ends)."""
    try:
        route = attributes.get(semconv.ATTR_HTTP_ROUTE)
        if isinstance(route, str):
            return route
        return route_template(scope.get("app") or app, scope)
    except Exception:
        report_internal_error("reading the request's route")
        return None


def _redact_safely(
    span: Span,
    attributes: Mapping[str, Any],
    provider: trace.TracerProvider | None,
    owned: bool,
) -> None:
    """Overwrite what the client sent on the server span, as soon as we see it: the
    span's start attributes are set, and its end (and export) are still to come."""
    try:
        if owned or exported_by(span, provider):
            found = redacted(attributes)
            if found:
                span.set_attributes(found)
    except Exception:
        report_internal_error("redacting the server span")


def _write_safely(
    span: Span | None, rollup: RequestRollup, scope: Scope, name_at_end: bool
) -> None:
    if span is None:
        return
    try:
        _write(span, rollup, scope, name_at_end)
    except Exception:
        report_internal_error("writing the request roll-up")


_QUERY_VALUED: Final = (semconv.ATTR_URL_QUERY,)
_URL_VALUED: Final = (
    semconv.ATTR_URL_FULL,
    semconv.ATTR_HTTP_URL_OLD,
    semconv.ATTR_HTTP_TARGET_OLD,
)


def redacted(attributes: Mapping[str, Any]) -> dict[str, str]:
    """New values for the attributes that carry what the client sent."""
    found: dict[str, str] = {}
    for key in _QUERY_VALUED:
        value = attributes.get(key)
        if isinstance(value, str) and value:
            found[key] = redact_query(value)
    for key in _URL_VALUED:
        value = attributes.get(key)
        if isinstance(value, str) and "?" in value:
            base, _, query = value.partition("?")
            found[key] = f"{base}?{redact_query(query.partition('#')[0])}"
    return found


def _write(span: Span, rollup: RequestRollup, scope: Scope, name_at_end: bool) -> None:
    if not span.is_recording():
        return
    if rollup.task_count or rollup.spans_dropped or rollup.pinned_llm_ns or rollup.pinned_io_ns:
        # only on requests that handed work to a pool: the others' spans stay as made
        span.set_attributes(_figures(rollup))
    if not name_at_end:
        return
    # Not matched at the start (app without routes at that level, or a route
    # class with its own matching): take the route Starlette recorded while
    # routing, for the span at least.
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        prefix = scope.get("root_path", "")[len(scope.get("app_root_path", "")) :]
        template = prefix + path
        span.set_attribute(semconv.ATTR_HTTP_ROUTE, template)
        span.update_name(f"{span_method(scope)} {template}")


def _figures(rollup: RequestRollup) -> dict[str, float | int | bool]:
    figures: dict[str, float | int | bool] = {
        semconv.ATTR_EXECUTOR_WAIT_TOTAL: rollup.wait_total_ns / 1e9,
        semconv.ATTR_EXECUTOR_WAIT_MAX: rollup.wait_max_ns / 1e9,
        semconv.ATTR_EXECUTOR_TASK_COUNT: rollup.task_count,
    }
    if rollup.spans_dropped:
        figures[semconv.ATTR_EXECUTOR_SPANS_DROPPED] = rollup.spans_dropped
    if rollup.pinned_llm_ns:
        figures[semconv.ATTR_EXECUTOR_PINNED_LLM] = True
        figures[semconv.ATTR_EXECUTOR_PINNED_LLM_DURATION] = rollup.pinned_llm_ns / 1e9
    if rollup.pinned_io_ns:
        figures[semconv.ATTR_EXECUTOR_PINNED_IO] = True
        figures[semconv.ATTR_EXECUTOR_PINNED_IO_DURATION] = rollup.pinned_io_ns / 1e9
    return figures


class RollupMiddleware:
    """The roll-up (and the loop monitor) for a server span that another
    middleware, outside this one, makes: Starlette's or OpenTelemetry's."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._rollup = _RollupApp(
            app, None, _standalone_settings(None), names_span=False, owns_span=False
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            _state.on_serving_loop()
        await self._rollup(scope, receive, send)


def _standalone_settings(max_spans_per_request: int | None) -> Settings:
    """The settings used when ``poolscope.instrument()`` is not active: the keyword,
    then the environment. Starlette builds its middleware on the first request (or
    the lifespan startup), so a bad variable is logged, not raised, and the
    defaults serve: they redact."""
    given = NOT_GIVEN if max_spans_per_request is None else max_spans_per_request
    Settings.resolve(max_spans_per_request=given, environ={})  # a bad keyword raises
    try:
        return Settings.resolve(max_spans_per_request=given)
    except ConfigurationError as error:
        logger.error("poolscope: %s; PoolscopeMiddleware uses the defaults instead", error)
        return Settings.resolve(max_spans_per_request=given, environ={})


class PoolscopeMiddleware:
    """ASGI middleware: the server span with the request's waits for workers.

    Use it as ``app.add_middleware(PoolscopeMiddleware)`` or as a plain
    wrapper, ``app = PoolscopeMiddleware(app)``. Keywords other than
    ``max_spans_per_request`` go to ``OpenTelemetryMiddleware`` (for example
    ``excluded_urls``, ``tracer_provider``, ``meter_provider``, hooks, and
    ``default_span_details``, which then names the span instead of the route).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_spans_per_request: int | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        **otel_options: Any,
    ) -> None:
        self.app = app
        standalone = _standalone_settings(max_spans_per_request)
        names_span = "default_span_details" not in otel_options
        # the roll-up on our own span, and on a span someone else made (theirs to name)
        own = _RollupApp(
            app,
            max_spans_per_request,
            standalone,
            names_span=names_span,
            tracer_provider=tracer_provider,
        )
        self._enrich = _RollupApp(
            app,
            max_spans_per_request,
            standalone,
            names_span=False,
            owns_span=False,
            tracer_provider=tracer_provider,
        )
        otel_options.setdefault("default_span_details", lambda scope: span_details(app, scope))
        self._otel = OpenTelemetryMiddleware(
            own,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            **otel_options,
        )
        self._warned_nested = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            # websockets and lifespan: OpenTelemetry's span for websockets, no roll-up
            await (self._otel if scope["type"] == "websocket" else self.app)(scope, receive, send)
            return
        if current_rollup.get() is not None:
            # another PoolscopeMiddleware outside this one (an app wrapped by hand, and
            # again by poolscope's Starlette hook) has the request in hand already
            await self.app(scope, receive, send)
            return
        _state.on_serving_loop()
        if _is_server_span(trace.get_current_span()) or self._instrumented_inside():
            await self._enrich(scope, receive, send)  # the span someone else makes
            return
        await self._otel(scope, receive, send)

    def _instrumented_inside(self) -> bool:
        """An OpenTelemetry-instrumented app inside us makes its own server span."""
        if not getattr(self.app, "_is_instrumented_by_opentelemetry", False):
            return False
        if not self._warned_nested:
            self._warned_nested = True
            logger.warning(
                "poolscope: the app inside PoolscopeMiddleware is already instrumented by "
                "OpenTelemetry, which makes the server span; poolscope does not make a "
                "second one, and cannot put the wait roll-up on it or redact the query "
                "values it records. Add poolscope with "
                "app.add_middleware(PoolscopeMiddleware) instead of wrapping the app."
            )
        return True
