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

The SDK's own retries happen inside ``create()``: the span covers all
attempts (an HTTP client instrumentation, if installed, shows each attempt as
a child span). Prompt and completion text is never recorded.
"""

from __future__ import annotations

import functools
import importlib
import weakref
from collections.abc import Callable
from typing import Any

from . import _runtime
from ._config import PATH_OPENAI
from ._llm import LLMCall
from ._patch import Patch
from ._safety import report_internal_error

__all__ = ["patches"]

PROVIDER = "openai"

# (module, sync class, async class, gen_ai.operation.name)
_TARGETS = (
    ("openai.resources.chat.completions", "Completions", "AsyncCompletions", "chat"),
    ("openai.resources.completions", "Completions", "AsyncCompletions", "text_completion"),
    ("openai.resources.embeddings", "Embeddings", "AsyncEmbeddings", "embeddings"),
    ("openai.resources.responses", "Responses", "AsyncResponses", "chat"),
)


def _begin(resource: Any, operation: str, kwargs: dict[str, Any]) -> LLMCall | None:
    """An LLM call for this ``create()``, started; None when not recorded."""
    if PATH_OPENAI not in _runtime.state.auto:
        return None
    try:
        model = kwargs.get("model")
        url = getattr(getattr(resource, "_client", None), "base_url", None)
        call = LLMCall(
            provider=PROVIDER,
            model=model if isinstance(model, str) and model else "unknown",
            operation=operation,
            stream=bool(kwargs.get("stream")),
            server_address=getattr(url, "host", None) or None,
            server_port=getattr(url, "port", None),
        )
        return call.start()
    except Exception:
        report_internal_error("starting an openai call")
        return None


def _observe_result(call: LLMCall, result: Any) -> None:
    """Response model, id, finish reasons and usage of a complete (non-stream) result."""
    call.set_response(
        model=getattr(result, "model", None),
        id=getattr(result, "id", None),
        finish_reasons=_finish_reasons(result),
    )
    _observe_usage(call, getattr(result, "usage", None))


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
        self.finalizer = weakref.finalize(owner, call.end)

    def observe(self, chunk: Any) -> None:
        try:
            _observe_chunk(self.call, chunk)
        except Exception:
            report_internal_error("reading an openai stream chunk")

    def __call__(self, exc: BaseException | None = None) -> None:
        if self.finalizer.detach() is not None:
            self.call.end(exc)


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


def _wrap_sync(original: Callable[..., Any], operation: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def create(self: Any, *args: Any, **kwargs: Any) -> Any:
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
            if owner is not None and "create" in vars(owner):
                found.append(Patch(owner, "create", wrap(owner.create, operation)))
    return found
