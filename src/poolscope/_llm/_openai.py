"""The official ``openai`` SDK: one GenAI span per API call, streams included.

Covered: chat completions, completions, embeddings and the responses API, on
the sync and the async client, however they are called: ``create()``,
``parse()``, ``chat.completions.stream()``, ``responses.stream()``,
``with_raw_response`` and ``with_streaming_response``. The hooks are those
every Stainless SDK shares (:mod:`._stainless`), on the base clients'
``request``: each call is an :class:`~poolscope._llm.LLMCall` lasting until its
response body ends, so a sync client on a pool worker shows up as a pinned
worker on the request, and the objects the SDK returns are its own.

With ``opentelemetry-instrumentation-openai-v2`` also active there is one span
per call, not two: its wrapper around ``create()`` opens the span before the
request is sent, and poolscope enriches that span with ``executor.name`` and
the pinned-worker roll-up instead of making its own (it records the GenAI
metrics too, so poolscope does not).

The SDK's own retries happen inside ``request``: the span covers all attempts
(an HTTP client instrumentation, if installed, shows each attempt as a child
span). Prompt and completion text is recorded only when content capture is on.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from .. import semconv
from .._config import PATH_OPENAI
from .._core import _state
from .._core._patch import Patch
from .._core._task import blocking_call, current_task
from .._safety import report_internal_error
from . import _stainless
from ._call import LLM_CALL, call_settings, text_parts
from ._stainless import field

__all__ = ["patches"]

PROVIDER = "openai"

_OPERATIONS = {
    "/chat/completions": "chat",
    "/completions": "text_completion",
    "/embeddings": "embeddings",
    "/responses": "chat",
}
"""The API paths (POSTed) that are GenAI operations, with their ``gen_ai.operation.name``."""

_FINAL_RESPONSE_EVENTS = frozenset({"response.completed", "response.incomplete"})
"""Responses-API stream events that carry the whole response."""


def _made_by_other_instrumentation(span: Span, model: object) -> bool:
    """The GenAI client span of this very call, already made by another instrumentation.

    Same kind and same requested model: an agent's or a workflow's span around
    the call (another model, or none) does not count.
    """
    attributes = getattr(span, "attributes", None) or {}
    return (
        span.is_recording()
        and getattr(span, "kind", None) is SpanKind.CLIENT
        and semconv.ATTR_GEN_AI_OPERATION_NAME in attributes
        and attributes.get(semconv.ATTR_GEN_AI_REQUEST_MODEL) == model
    )


class _Enrichment:
    """Another instrumentation's span for the call: the pool on it, the worker pinned."""

    def __init__(self, span: Span) -> None:
        self._task = current_task.get()
        if self._task is not None:
            span.set_attribute(semconv.ATTR_EXECUTOR_NAME, self._task.pool.name)
        self._started = time.monotonic_ns()
        self._inside: Any = blocking_call.set(LLM_CALL)
        self._finished = False

    def observe_result(self, result: Any) -> None:
        pass  # the other instrumentation records what the call says

    def observe_event(self, event: Any) -> None:
        pass

    def detach(self) -> None:
        if self._inside is not None:
            inside, self._inside = self._inside, None
            with contextlib.suppress(ValueError):  # ended in another context than it began
                blocking_call.reset(inside)

    def finish(self, error: BaseException | None) -> None:
        if self._finished:
            return
        self._finished = True
        if self._task is not None and self._task.rollup is not None:
            self._task.rollup.add_pinned(time.monotonic_ns() - self._started)


class _OpenAICall(_stainless.SDKCall):
    """What an OpenAI result or stream chunk says about its call."""

    def observe_result(self, result: Any) -> None:
        reasons = _finish_reasons(result)
        self.set_response(
            model=field(result, "model"), id=field(result, "id"), finish_reasons=reasons
        )
        self._observe_usage(field(result, "usage"))
        if self.capture_content:
            text = _output_text(result)
            if text is not None:
                self.set_output(text)

    def observe_event(self, event: Any) -> None:
        self.first_chunk()
        if field(event, "type") in _FINAL_RESPONSE_EVENTS:
            response = field(event, "response")
            if response is not None:
                self._observe_whole(response)
                return
        self.keep_text(_chunk_text(event))
        self.set_response(model=field(event, "model"), id=field(event, "id"))
        reasons = _finish_reasons(event)
        if reasons and field(event, "choices"):
            self.set_response(finish_reasons=[*(self.finish_reasons or []), *reasons])
        self._observe_usage(field(event, "usage"))

    def _observe_whole(self, response: Any) -> None:
        """The final event of a responses-API stream: the whole response, text kept as streamed."""
        self.set_response(
            model=field(response, "model"),
            id=field(response, "id"),
            finish_reasons=_finish_reasons(response),
        )
        self._observe_usage(field(response, "usage"))

    def _observe_usage(self, usage: Any) -> None:
        if usage is None:
            return
        input_tokens = field(usage, "prompt_tokens")
        if input_tokens is None:
            input_tokens = field(usage, "input_tokens")
        output_tokens = field(usage, "completion_tokens")
        if output_tokens is None:
            output_tokens = field(usage, "output_tokens")
        self.set_usage(input_tokens=input_tokens, output_tokens=output_tokens)


def _finish_reasons(result: Any) -> list[str] | None:
    choices = field(result, "choices")
    if choices:
        reasons = [str(field(c, "finish_reason")) for c in choices if field(c, "finish_reason")]
        return reasons or None
    status = field(result, "status")  # the responses API
    return [str(status)] if isinstance(status, str) else None


def _output_text(result: Any) -> str | None:
    choices = field(result, "choices")
    if choices:
        first = choices[0]
        message = field(first, "message")
        text = field(message, "content") if message is not None else field(first, "text")
        return text if isinstance(text, str) else None
    text = field(result, "output_text")  # a parsed Response; not in its decoded JSON
    if isinstance(text, str):
        return text
    pieces = [
        field(part, "text")
        for item in field(result, "output") or ()
        if field(item, "type") == "message"
        for part in field(item, "content") or ()
        if field(part, "type") == "output_text"
    ]
    texts = [piece for piece in pieces if isinstance(piece, str)]
    return "".join(texts) if texts else None


def _chunk_text(chunk: Any) -> str | None:
    if field(chunk, "type") == "response.output_text.delta":
        delta = field(chunk, "delta")
        return delta if isinstance(delta, str) else None
    choices = field(chunk, "choices")
    if not choices:
        return None
    delta = field(choices[0], "delta")
    text = field(delta, "content") if delta is not None else field(choices[0], "text")
    return text if isinstance(text, str) else None


def _input_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's prompt in the GenAI conventions' message shape (capture only)."""
    if isinstance(body.get("messages"), list):
        return [
            {"role": str(m.get("role", "user")), "parts": text_parts(m.get("content"))}
            for m in body["messages"]
            if isinstance(m, dict)
        ]
    for key in ("prompt", "input"):
        value = body.get(key)
        if isinstance(value, str):
            return [{"role": "user", "parts": text_parts(value)}]
        if isinstance(value, list):
            return [
                {"role": str(item.get("role", "user")), "parts": text_parts(item.get("content"))}
                if isinstance(item, dict)
                else {"role": "user", "parts": text_parts(item)}
                for item in value
            ]
    return []


def _begin(client: Any, options: Any, kwargs: dict[str, Any]) -> _OpenAICall | _Enrichment | None:
    """The watcher of this request, started; None when it is no GenAI operation, or is off."""
    if PATH_OPENAI not in _state.state.auto:
        return None
    try:
        if str(getattr(options, "method", "")).lower() != "post":
            return None
        operation = _OPERATIONS.get(str(getattr(options, "url", "")))
        if operation is None:
            return None
        body = getattr(options, "json_data", None)
        body = body if isinstance(body, dict) else {}
        model = body.get("model")
        span = trace.get_current_span()
        if _made_by_other_instrumentation(span, model):
            return _Enrichment(span)
        call = _OpenAICall(
            provider=PROVIDER,
            operation=operation,
            stream=bool(kwargs.get("stream")),
            **call_settings(model, getattr(client, "base_url", None)),
        )
        call.start()
        if call.capture_content:
            call.text = [] if call.stream else None
            call.set_messages(input=_input_messages(body))
        return call
    except Exception:
        report_internal_error("starting an openai call")
        return None


def patches() -> list[Patch]:
    return _stainless.patches("openai", "request", _begin)
