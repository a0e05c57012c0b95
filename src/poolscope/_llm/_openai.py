"""The official ``openai`` SDK: one GenAI span per ``create()``, streams included.

Covered: chat completions, completions, embeddings and the responses API, on
the sync and the async client, with and without ``stream=True``. Each call is
an :class:`~poolscope._llm.LLMCall`, so a sync client on a pool worker shows up
as a pinned worker on the request.

A stream's span lasts as long as the stream: it ends when the stream is
exhausted, closed (also early, or by leaving its ``with`` block), when reading
it fails (with ``error.type``), or at the latest when the stream object is
garbage collected. Time to first chunk is measured when the first chunk
arrives and recorded when the stream ends.

With ``opentelemetry-instrumentation-openai-v2`` also active there is one span
per call, not two: poolscope runs inside its wrapper (going beneath it when it
was installed first) and enriches its span with ``executor.name`` and the
pinned-worker roll-up instead of making its own.

The SDK's own retries happen inside ``create()``: the span covers all
attempts (an HTTP client instrumentation, if installed, shows each attempt as
a child span). Prompt and completion text is never recorded.
"""

from __future__ import annotations

import functools
import importlib
import time
import weakref
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from .. import semconv
from .._config import PATH_OPENAI
from .._core import _state
from .._core._patch import Patch, inside_instrumentation
from .._core._task import blocking_call, current_task
from .._safety import report_internal_error
from ._call import LLM_CALL, LLMCall, call_settings, text_parts

__all__ = ["patches"]

PROVIDER = "openai"
_OPENAI_INSTRUMENTATIONS = "opentelemetry.instrumentation.openai"

# (module, sync class, async class, gen_ai.operation.name)
_TARGETS = (
    ("openai.resources.chat.completions", "Completions", "AsyncCompletions", "chat"),
    ("openai.resources.completions", "Completions", "AsyncCompletions", "text_completion"),
    ("openai.resources.embeddings", "Embeddings", "AsyncEmbeddings", "embeddings"),
    ("openai.resources.responses", "Responses", "AsyncResponses", "chat"),
)


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


def _enrich(span: Span) -> Callable[[], None]:
    """Mark another instrumentation's span with the pool; return what to do at the end."""
    task = current_task.get()
    if task is None:
        return lambda: None
    span.set_attribute(semconv.ATTR_EXECUTOR_NAME, task.pool.name)
    started = time.monotonic_ns()
    inside = blocking_call.set(LLM_CALL)

    def pinned() -> None:
        blocking_call.reset(inside)
        if task.rollup is not None:
            task.rollup.add_pinned(time.monotonic_ns() - started)

    return pinned


def _begin(resource: Any, operation: str, kwargs: dict[str, Any]) -> LLMCall | None:
    """An LLM call for this ``create()``, started; None when not recorded."""
    if PATH_OPENAI not in _state.state.auto:
        return None
    try:
        url = getattr(getattr(resource, "_client", None), "base_url", None)
        call = LLMCall(
            provider=PROVIDER,
            operation=operation,
            stream=bool(kwargs.get("stream")),
            **call_settings(kwargs.get("model"), url),
        )
        call.start()
        if call.capture_content:
            call.set_messages(input=_input_messages(kwargs))
        return call
    except Exception:
        report_internal_error("starting an openai call")
        return None


def _input_messages(kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's prompt in the GenAI conventions' message shape (capture only)."""
    if isinstance(kwargs.get("messages"), list):
        return [
            {"role": str(m.get("role", "user")), "parts": text_parts(m.get("content"))}
            for m in kwargs["messages"]
            if isinstance(m, dict)
        ]
    for key in ("prompt", "input"):
        value = kwargs.get(key)
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


def _output_text(result: Any) -> str | None:
    choices = getattr(result, "choices", None)
    if choices:
        first = choices[0]
        message = getattr(first, "message", None)
        text = (
            getattr(message, "content", None)
            if message is not None
            else getattr(first, "text", None)
        )
        return text if isinstance(text, str) else None
    text = getattr(result, "output_text", None)
    return text if isinstance(text, str) else None


def _output_messages(text: str, finish_reasons: list[str] | None) -> list[dict[str, Any]]:
    message: dict[str, Any] = {"role": "assistant", "parts": [{"type": "text", "content": text}]}
    if finish_reasons:
        message["finish_reason"] = finish_reasons[0]
    return [message]


def _observe_result(call: LLMCall, result: Any) -> None:
    """Response model, id, finish reasons and usage of a complete (non-stream) result."""
    reasons = _finish_reasons(result)
    call.set_response(
        model=getattr(result, "model", None), id=getattr(result, "id", None), finish_reasons=reasons
    )
    _observe_usage(call, getattr(result, "usage", None))
    if call.capture_content:
        text = _output_text(result)
        if text is not None:
            call.set_messages(output=_output_messages(text, reasons))


def _finish_reasons(result: Any) -> list[str] | None:
    choices = getattr(result, "choices", None)
    if choices:
        reasons = [str(c.finish_reason) for c in choices if getattr(c, "finish_reason", None)]
        return reasons or None
    status = getattr(result, "status", None)  # the responses API
    return [str(status)] if isinstance(status, str) else None


def _observe_usage(call: LLMCall, usage: Any) -> None:
    if usage is None:
        return
    input_tokens = getattr(usage, "prompt_tokens", None)
    if input_tokens is None:
        input_tokens = getattr(usage, "input_tokens", None)
    output_tokens = getattr(usage, "completion_tokens", None)
    if output_tokens is None:
        output_tokens = getattr(usage, "output_tokens", None)
    call.set_usage(input_tokens=input_tokens, output_tokens=output_tokens)


def _observe_chunk(call: LLMCall, chunk: Any) -> None:
    call.first_chunk()
    response = getattr(chunk, "response", None)  # responses API events carry the response
    if response is not None and getattr(chunk, "type", "") in (
        "response.completed",
        "response.incomplete",
    ):
        _observe_result(call, response)
        return
    call.set_response(model=getattr(chunk, "model", None), id=getattr(chunk, "id", None))
    reasons = _finish_reasons(chunk)
    if reasons and getattr(chunk, "choices", None):
        call.set_response(finish_reasons=[*(call.finish_reasons or []), *reasons])
    _observe_usage(call, getattr(chunk, "usage", None))


class _StreamEnd:
    """Ends the call once, whichever comes first: exhaustion, error, close, or garbage."""

    def __init__(self, owner: object, call: LLMCall) -> None:
        self.call = call
        # Completion text, kept only with content capture on, and only as much
        # as will be recorded.
        self.text: list[str] | None = [] if call.capture_content else None
        self.text_room = call.content_limit
        self.finalizer = weakref.finalize(owner, self._end, None)

    def observe(self, chunk: Any) -> None:
        try:
            _observe_chunk(self.call, chunk)
            if self.text is not None and self.text_room > 0:
                piece = _chunk_text(chunk)
                if piece:
                    self.text.append(piece[: self.text_room])
                    self.text_room -= len(piece)
        except Exception:
            report_internal_error("reading an openai stream chunk")

    def __call__(self, exc: BaseException | None = None) -> None:
        if self.finalizer.detach() is not None:
            self._end(exc)

    def _end(self, exc: BaseException | None) -> None:
        if self.text is not None:
            reasons = list(self.call.finish_reasons or ())
            self.call.set_messages(output=_output_messages("".join(self.text), reasons))
        self.call.end(exc)


def _chunk_text(chunk: Any) -> str | None:
    if getattr(chunk, "type", None) == "response.output_text.delta":
        delta = getattr(chunk, "delta", None)
        return delta if isinstance(delta, str) else None
    choices = getattr(chunk, "choices", None)
    if not choices:
        return None
    delta = getattr(choices[0], "delta", None)
    text = (
        getattr(delta, "content", None) if delta is not None else getattr(choices[0], "text", None)
    )
    return text if isinstance(text, str) else None


class _SyncStream:
    """Stands in for ``openai.Stream``; everything else is the stream's own."""

    def __init__(self, stream: Any, call: LLMCall) -> None:
        self._stream = stream
        self._iterator = iter(stream)
        self._end = _StreamEnd(self, call)

    def __iter__(self) -> _SyncStream:
        return self

    def __next__(self) -> Any:
        try:
            chunk = next(self._iterator)
        except StopIteration:
            self._end()
            raise
        except BaseException as exc:
            self._end(exc)
            raise
        self._end.observe(chunk)
        return chunk

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._end()

    def __enter__(self) -> _SyncStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _AsyncStream:
    """Stands in for ``openai.AsyncStream``; everything else is the stream's own."""

    def __init__(self, stream: Any, call: LLMCall) -> None:
        self._stream = stream
        self._iterator = stream.__aiter__()
        self._end = _StreamEnd(self, call)

    def __aiter__(self) -> _AsyncStream:
        return self

    async def __anext__(self) -> Any:
        try:
            chunk = await self._iterator.__anext__()
        except StopAsyncIteration:
            self._end()
            raise
        except BaseException as exc:
            self._end(exc)
            raise
        self._end.observe(chunk)
        return chunk

    async def close(self) -> None:
        try:
            await self._stream.close()
        finally:
            self._end()

    async def __aenter__(self) -> _AsyncStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _settle(call: LLMCall, result: Any, stream_type: type) -> Any:
    """After ``create()`` returned: wrap a stream, or record a complete result."""
    try:
        call.detach()  # a stream is read later, maybe elsewhere: the span is no longer current
        if call.stream:
            return stream_type(result, call)
        _observe_result(call, result)
        call.end()
    except Exception:
        report_internal_error("recording an openai result")
    return result


def _enrichment(kwargs: dict[str, Any]) -> Callable[[], None] | None:
    if PATH_OPENAI not in _state.state.auto:
        return None
    try:
        span = trace.get_current_span()
        return _enrich(span) if _made_by_other_instrumentation(span, kwargs.get("model")) else None
    except Exception:
        report_internal_error("enriching an openai span")
        return None


def _wrap_sync(original: Callable[..., Any], operation: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        done = _enrichment(kwargs)
        if done is not None:
            try:
                return original(self, *args, **kwargs)
            finally:
                done()
        call = _begin(self, operation, kwargs)
        if call is None:
            return original(self, *args, **kwargs)
        try:
            result = original(self, *args, **kwargs)
        except BaseException as exc:
            call.end(exc)
            raise
        return _settle(call, result, _SyncStream)

    return create


def _wrap_async(original: Callable[..., Any], operation: str) -> Callable[..., Any]:
    @functools.wraps(original)
    async def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        done = _enrichment(kwargs)
        if done is not None:
            try:
                return await original(self, *args, **kwargs)
            finally:
                done()
        call = _begin(self, operation, kwargs)
        if call is None:
            return await original(self, *args, **kwargs)
        try:
            result = await original(self, *args, **kwargs)
        except BaseException as exc:
            call.end(exc)
            raise
        return _settle(call, result, _AsyncStream)

    return create


def patches() -> list[Patch]:
    found: list[Patch] = []
    for module_name, sync_name, async_name, operation in _TARGETS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return []  # openai is not installed
        for name, wrap in ((sync_name, _wrap_sync), (async_name, _wrap_async)):
            owner = getattr(module, name, None)
            if owner is None or "create" not in vars(owner):
                continue
            wrapper = functools.partial(wrap, operation=operation)
            found.append(inside_instrumentation(owner, "create", wrapper, _OPENAI_INSTRUMENTATIONS))
    return found
