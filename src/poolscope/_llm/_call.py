"""``poolscope.llm_call``: a GenAI client span and metrics for any LLM client.

Follows the OpenTelemetry GenAI semantic conventions: a CLIENT span named
``{gen_ai.operation.name} {gen_ai.request.model}`` with ``gen_ai.*``
attributes, ``error.type`` on failure, and the metrics
``gen_ai.client.operation.duration``, ``gen_ai.client.token.usage`` and, for
streams, ``gen_ai.client.operation.time_to_first_chunk``.

And the finding poolscope exists for: when the call runs on a pool worker
(a sync SDK pushed to ``to_thread`` or a sync endpoint), the span carries that
pool's ``executor.name`` and the request that submitted the task gets
``executor.pinned.llm`` = true with the seconds the worker was held.

    with poolscope.llm_call(provider="anthropic", model="claude-x") as call:
        reply = client.messages.create(...)
        call.set_usage(input_tokens=reply.usage.input_tokens, output_tokens=...)

Prompts and completions are recorded only when the caller passes them to
:meth:`LLMCall.set_messages` *and* content capture is switched on.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import json
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeVar

from opentelemetry import context, trace
from opentelemetry.trace import Span, SpanKind

from .. import semconv
from .._core import _state
from .._core._recorder import record
from .._core._task import blocking_call, current_task, error_type, mark_error
from .._core._telemetry import Instruments, context_inside
from .._errors import ConfigurationError
from .._safety import report_internal_error

__all__ = ["LLM_CALL", "LLMCall", "call_settings", "llm_call", "text_parts"]

LLM_CALL: Final = "llm"
"""What :data:`~poolscope._core._task.blocking_call` says inside an LLM call."""

P = ParamSpec("P")
R = TypeVar("R")


def _capped(text: str, limit: int) -> str:
    """At most ``limit`` characters, marked when cut (the JSON is then partial)."""
    return text if len(text) <= limit else text[:limit] + "…[truncated]"


def call_settings(model: object, base_url: object) -> dict[str, Any]:
    """An SDK call's model (``unknown`` unless a name) and server, from its client's base URL."""
    return {
        "model": model if isinstance(model, str) and model else "unknown",
        "server_address": getattr(base_url, "host", None) or None,
        "server_port": getattr(base_url, "port", None),
    }


def text_parts(content: Any) -> list[dict[str, Any]]:
    """A message's content as the conventions' text parts: a string, or the text of its parts."""
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if isinstance(content, list):  # multi-part content: keep the text parts
        return [
            {"type": "text", "content": part.get("text", "")}
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
    return []


def _check(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"llm_call(): {name} must be a non-empty string, got {value!r}")
    return value


class LLMCall:
    """One LLM operation; use as a context manager (sync or async) or a decorator."""

    def __init__(
        self,
        *,
        provider: str,
        model: str,
        operation: str = "chat",
        stream: bool = False,
        server_address: str | None = None,
        server_port: int | None = None,
    ) -> None:
        self.provider = _check("provider", provider)
        self.model = _check("model", model)
        self.operation = _check("operation", operation)
        self.stream = stream
        self.server_address = server_address
        self.server_port = server_port
        self._settings: dict[str, Any] = {
            "provider": provider,
            "model": model,
            "operation": operation,
            "stream": stream,
            "server_address": server_address,
            "server_port": server_port,
        }
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.response_model: str | None = None
        self.response_id: str | None = None
        self.finish_reasons: Sequence[str] | None = None
        self._span: Span | None = None
        self._token: object | None = None
        self._inside: contextvars.Token[str | None] | None = None
        self._started = 0
        self._first_chunk_ns: int | None = None
        self._pool_task: Any = None
        self._instruments: Instruments | None = None
        self.capture_content = False
        self.content_limit = 0
        self._input_messages: list[dict[str, Any]] | None = None
        self._output_messages: list[dict[str, Any]] | None = None

    # --- what the caller reports ------------------------------------------------

    def set_usage(
        self, *, input_tokens: int | None = None, output_tokens: int | None = None
    ) -> None:
        if input_tokens is not None:
            self.input_tokens = int(input_tokens)
        if output_tokens is not None:
            self.output_tokens = int(output_tokens)

    def set_response(
        self,
        *,
        model: str | None = None,
        id: str | None = None,
        finish_reasons: Sequence[str] | None = None,
    ) -> None:
        if model is not None:
            self.response_model = model
        if id is not None:
            self.response_id = id
        if finish_reasons is not None:
            self.finish_reasons = list(finish_reasons)

    def set_messages(
        self,
        *,
        input: Sequence[dict[str, Any]] | None = None,
        output: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        """Prompt and completion messages, in the conventions' JSON shape.

        Kept only when content capture is switched on
        (``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``); otherwise
        dropped here, so they never reach a span.
        """
        if not self.capture_content:
            return
        if input is not None:
            self._input_messages = list(input)
        if output is not None:
            self._output_messages = list(output)

    def first_chunk(self) -> None:
        """Mark the arrival of the first chunk of a stream (later calls are ignored)."""
        if self._first_chunk_ns is None:
            self._first_chunk_ns = time.monotonic_ns()

    # --- life cycle -------------------------------------------------------------

    def start(self) -> LLMCall:
        self._started = time.monotonic_ns()
        try:
            _state.ensure_telemetry()
            telemetry = _state.state.telemetry
            assert telemetry is not None
            self._instruments = telemetry.histograms
            self.capture_content = telemetry.settings.capture_content
            self.content_limit = telemetry.settings.content_max_length
            self._pool_task = current_task.get()
            attributes = self._base_attributes()
            attributes[semconv.ATTR_GEN_AI_REQUEST_STREAM] = self.stream
            if self._pool_task is not None:
                attributes[semconv.ATTR_EXECUTOR_NAME] = self._pool_task.pool.name
            self._span = self._open_span(telemetry.tracer, attributes)
            if self._owns_span:
                self._token = context.attach(context_inside(self._span, None))
            self._inside = blocking_call.set(LLM_CALL)
        except Exception:
            report_internal_error("starting an LLM call span")
        return self

    # --- what an SDK's own integration changes ---------------------------------

    _owns_span = True
    """Whether the span is poolscope's, to fill and end; not when it is the SDK's."""

    def _open_span(self, tracer: trace.Tracer, attributes: dict[str, Any]) -> Span:
        return tracer.start_span(
            f"{self.operation} {self.model}", kind=SpanKind.CLIENT, attributes=attributes
        )

    def _error_type(self, exc: BaseException) -> str:
        return error_type(exc)

    def detach(self) -> None:
        """Stop the span being current here; it stays open until :meth:`end`."""
        if self._token is not None:
            context.detach(self._token)  # type: ignore[arg-type]
            self._token = None
        if self._inside is not None:
            inside, self._inside = self._inside, None
            with contextlib.suppress(ValueError):  # ended in another context than it began
                blocking_call.reset(inside)

    def end(self, exc: BaseException | None = None) -> None:
        ended = time.monotonic_ns()
        try:
            self._finish(ended, exc)
        except Exception:
            report_internal_error("ending an LLM call span")
        finally:
            self.detach()

    def _base_attributes(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            semconv.ATTR_GEN_AI_OPERATION_NAME: self.operation,
            semconv.ATTR_GEN_AI_PROVIDER_NAME: self.provider,
            semconv.ATTR_GEN_AI_REQUEST_MODEL: self.model,
        }
        if self.server_address:
            attributes[semconv.ATTR_SERVER_ADDRESS] = self.server_address
        if self.server_port:
            attributes[semconv.ATTR_SERVER_PORT] = self.server_port
        return attributes

    def _finish(self, ended: int, exc: BaseException | None) -> None:
        duration = (ended - self._started) / 1e9
        metric_attributes = self._base_attributes()
        if self.response_model:
            metric_attributes[semconv.ATTR_GEN_AI_RESPONSE_MODEL] = self.response_model
        if exc is not None:
            metric_attributes[semconv.ATTR_ERROR_TYPE] = self._error_type(exc)
        if self._pool_task is not None:
            # the worker-seconds sync LLM calls pin, per pool, for the dashboards
            pool_attributes = self._pool_task.pool.attributes  # the bounded metric name
            metric_attributes[semconv.ATTR_EXECUTOR_NAME] = pool_attributes[
                semconv.ATTR_EXECUTOR_NAME
            ]
        span = self._span
        if span is not None and self._owns_span:
            span.set_attributes(self._response_attributes())
            if exc is not None:
                mark_error(span, exc, self._error_type(exc))
            span.end()
        instruments = self._instruments
        if instruments is not None:
            # through the one recording path (off this thread), each with the call's
            # trace as its exemplar: an LLM call is what a latency spike clicks through to
            exemplar = trace.set_span_in_context(span) if span is not None else None
            record(instruments.gen_ai_duration, duration, metric_attributes, exemplar)
            for kind, count in (
                (semconv.GEN_AI_TOKEN_TYPE_INPUT, self.input_tokens),
                (semconv.GEN_AI_TOKEN_TYPE_OUTPUT, self.output_tokens),
            ):
                if count is not None:
                    record(
                        instruments.gen_ai_tokens,
                        count,
                        {**metric_attributes, semconv.ATTR_GEN_AI_TOKEN_TYPE: kind},
                        exemplar,
                    )
            if self.stream and self._first_chunk_ns is not None:
                first = (self._first_chunk_ns - self._started) / 1e9
                record(instruments.gen_ai_first_chunk, first, metric_attributes, exemplar)
        task = self._pool_task
        if task is not None and task.rollup is not None:
            task.rollup.add_pinned(ended - self._started)

    def _response_attributes(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {}
        if self.response_model:
            attributes[semconv.ATTR_GEN_AI_RESPONSE_MODEL] = self.response_model
        if self.response_id:
            attributes[semconv.ATTR_GEN_AI_RESPONSE_ID] = self.response_id
        if self.finish_reasons:
            attributes[semconv.ATTR_GEN_AI_RESPONSE_FINISH_REASONS] = list(self.finish_reasons)
        if self.input_tokens is not None:
            attributes[semconv.ATTR_GEN_AI_USAGE_INPUT_TOKENS] = self.input_tokens
        if self.output_tokens is not None:
            attributes[semconv.ATTR_GEN_AI_USAGE_OUTPUT_TOKENS] = self.output_tokens
        if self._first_chunk_ns is not None:
            attributes[semconv.ATTR_GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = (
                self._first_chunk_ns - self._started
            ) / 1e9
        if self.capture_content:
            for name, messages in (
                (semconv.ATTR_GEN_AI_INPUT_MESSAGES, self._input_messages),
                (semconv.ATTR_GEN_AI_OUTPUT_MESSAGES, self._output_messages),
            ):
                if messages is not None:
                    attributes[name] = _capped(json.dumps(messages), self.content_limit)
        return attributes

    # --- protocols --------------------------------------------------------------

    def __enter__(self) -> LLMCall:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.end(exc)

    async def __aenter__(self) -> LLMCall:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.end(exc)

    def _fresh(self) -> LLMCall:
        """A new call with these settings: a decorated function makes one per call."""
        return LLMCall(**self._settings)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a function: each call is one LLM operation with these settings."""
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def call_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                async with self._fresh():
                    return await fn(*args, **kwargs)

            return call_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            with self._fresh():
                return fn(*args, **kwargs)

        return call


llm_call = LLMCall
"""``poolscope.llm_call(provider=..., model=..., ...)``: the lower-case spelling,
as used in ``with`` statements and as a decorator; see :class:`LLMCall`."""
