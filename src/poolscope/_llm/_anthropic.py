"""The official ``anthropic`` SDK (2.x): GenAI metrics for every Messages call, one span.

The SDK traces its own calls: a CLIENT span per API call (instrumentation
scope ``com.anthropic.sdk.python``), unless ``ANTHROPIC_OPEN_TELEMETRY=false``
or the client's ``open_telemetry=False`` turn it off; it records no metrics
and knows nothing of pools. So for each ``messages.create`` call:

* with the SDK's span, that span is the call's: poolscope adds
  ``executor.name`` to it and leaves the rest to the SDK;
* without it, poolscope makes the GenAI span (``chat {model}``) itself;
* either way, the GenAI metrics (``gen_ai.client.operation.duration``,
  ``gen_ai.client.token.usage``, time to first chunk for streams) and, on a
  pool's worker, the pinned-worker roll-up on the request.

The hooks are those every Stainless SDK shares (:mod:`._stainless`), on the
base clients' ``_request`` (inside the SDK's span when there is one), so
``create()``, ``stream()``, ``parse()``, ``with_raw_response`` and
``with_streaming_response`` are all covered, and a call lasts until its
response body ends, as the SDK's span does. The objects a call returns are
left exactly as the SDK made them (the SDK's own span finds its observer on
the body).
``error.type`` is the SDK's own (the API error's type, such as
``rate_limit_error``), so the metric and the SDK's span agree.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span

from .. import semconv
from .._config import PATH_ANTHROPIC
from .._core import _state
from .._core._patch import Patch
from .._core._task import error_type
from .._safety import report_internal_error
from . import _stainless
from ._call import call_settings, text_parts
from ._stainless import field

__all__ = ["patches"]

PROVIDER = "anthropic"
_OPERATIONS = {"anthropic.messages.create": "chat"}
"""The SDK's span names that are GenAI operations, with their ``gen_ai.operation.name``."""


@functools.cache
def _sdk_error_type() -> Callable[[BaseException], str] | None:
    """The SDK's own ``error.type`` of a failed call (``rate_limit_error``), if it has one."""
    try:
        found: Callable[[BaseException], str] = importlib.import_module(
            "anthropic._tracing"
        ).error_type
    except (ImportError, AttributeError):
        return None
    return found


def _count(usage: Any, key: str) -> int:
    value = field(usage, key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class _AnthropicCall(_stainless.SDKCall):
    """An LLM call beside the SDK's span when there is one, with the SDK's error types."""

    def __init__(
        self,
        *,
        sdk_traces: bool,
        sdk_span: Span | None,
        sdk_error_type: Callable[..., str] | None,
        **settings: Any,
    ) -> None:
        super().__init__(**settings)
        self._sdk_span = sdk_span
        self._sdk_error_type = sdk_error_type
        # The SDK's tracing on: its span is the call's, or there is none (sampled out)
        self._owns_span = not sdk_traces

    def _open_span(self, tracer: trace.Tracer, attributes: dict[str, Any]) -> Span:
        if self._owns_span:
            return super()._open_span(tracer, attributes)
        if self._sdk_span is None:
            return trace.INVALID_SPAN
        if semconv.ATTR_EXECUTOR_NAME in attributes:
            self._sdk_span.set_attribute(
                semconv.ATTR_EXECUTOR_NAME, attributes[semconv.ATTR_EXECUTOR_NAME]
            )
        return self._sdk_span

    def _error_type(self, exc: BaseException) -> str:
        if self._sdk_error_type is not None:
            try:
                return self._sdk_error_type(exc)
            except Exception:
                report_internal_error("reading an anthropic error's type")
        return error_type(exc)

    # --- what the response says ---------------------------------------------------

    def observe_result(self, message: Any) -> None:
        """Model, id, stop reason and usage of a whole Message (parsed or decoded)."""
        reason = field(message, "stop_reason")
        self.set_response(
            model=field(message, "model"),
            id=field(message, "id"),
            finish_reasons=[reason] if isinstance(reason, str) else None,
        )
        self._observe_usage(field(message, "usage"), input_too=True)
        if self.capture_content:
            blocks = field(message, "content") or []
            text = "".join(
                field(block, "text") or "" for block in blocks if field(block, "type") == "text"
            )
            self.set_output(text)

    def _observe_usage(self, usage: Any, *, input_too: bool) -> None:
        if usage is None:
            return
        # As the conventions (and the SDK's span) count them: cached input tokens are input
        input_tokens = (
            _count(usage, "input_tokens")
            + _count(usage, "cache_read_input_tokens")
            + _count(usage, "cache_creation_input_tokens")
            if input_too and isinstance(field(usage, "input_tokens"), int)
            else None
        )
        output = field(usage, "output_tokens")
        self.set_usage(
            input_tokens=input_tokens, output_tokens=output if isinstance(output, int) else None
        )

    def observe_event(self, event: Any) -> None:
        kind = field(event, "type")
        if kind == "message_start":
            message = field(event, "message")
            self.set_response(model=field(message, "model"), id=field(message, "id"))
            self._observe_usage(field(message, "usage"), input_too=True)
        elif kind == "content_block_delta":
            self.first_chunk()
            self.keep_text(field(field(event, "delta"), "text"))
        elif kind == "message_delta":
            reason = field(field(event, "delta"), "stop_reason")
            if isinstance(reason, str):
                self.set_response(finish_reasons=[reason])
            self._observe_usage(field(event, "usage"), input_too=False)


def _begin(client: Any, options: Any, kwargs: dict[str, Any]) -> _AnthropicCall | None:
    """The call for this request, started; None when it is no GenAI operation, or is off."""
    if PATH_ANTHROPIC not in _state.state.auto:
        return None
    try:
        operation = _OPERATIONS.get(getattr(options, "span_name", None) or "")
        if operation is None:
            return None
        body = getattr(options, "json_data", None)
        body = body if isinstance(body, dict) else {}
        sdk_span = getattr(kwargs.get("call"), "span", None)
        # read by the SDK's request() already, which only then calls _request
        sdk_traces = getattr(client, "_tracer", None) is not None
        call = _AnthropicCall(
            sdk_traces=sdk_traces,
            sdk_span=sdk_span,
            sdk_error_type=_sdk_error_type(),
            provider=PROVIDER,
            operation=operation,
            stream=bool(kwargs.get("stream")),
            **call_settings(body.get("model"), getattr(client, "base_url", None)),
        )
        call.start()
        if call.capture_content and not sdk_traces:
            call.text = [] if call.stream else None
            call.set_messages(input=_input_messages(body))
        return call
    except Exception:
        report_internal_error("starting an anthropic call")
        return None


def _input_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's prompt in the GenAI conventions' message shape (capture only)."""
    found = []
    system = body.get("system")
    if system:
        found.append({"role": "system", "parts": text_parts(system)})
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            role = str(message.get("role", "user"))
            found.append({"role": role, "parts": text_parts(message.get("content"))})
    return found


def patches() -> list[Patch]:
    # _request, not request: it runs inside the SDK's span, which request() opens
    return _stainless.patches("anthropic", "_request", _begin)
