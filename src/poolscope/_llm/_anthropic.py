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

The hook is the one method every SDK call goes through, the base clients'
``_request`` (inside the SDK's span when there is one): ``create()``,
``stream()``, ``parse()``, ``with_raw_response`` and
``with_streaming_response`` all pass there. A call lasts until its response
body ends, as the SDK's span does: a stream read to its end or failing
(``Stream.__stream__``), closed (``close()``, also early), a raw response
read or closed, or any of them dropped and collected. Those hooks are on the
SDK's classes: the objects a call returns, their response and its body are
left exactly as the SDK made them (the SDK's own span finds its observer on
the body).
``error.type`` is the SDK's own (the API error's type, such as
``rate_limit_error``), so the metric and the SDK's span agree.
"""

from __future__ import annotations

import functools
import importlib
import weakref
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span

from .. import semconv
from .._config import PATH_ANTHROPIC
from .._core import _state
from .._core._patch import Patch
from .._core._task import error_type
from .._safety import report_internal_error
from ._call import LLMCall, call_settings, text_parts

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


def _get(value: Any, key: str) -> Any:
    """A field of a response, decoded (a dict) or parsed (a model)."""
    return value.get(key) if isinstance(value, dict) else getattr(value, key, None)


def _count(usage: Any, key: str) -> int:
    value = _get(usage, key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class _AnthropicCall(LLMCall):
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
        self.text: list[str] | None = None
        """Completion text of a stream, kept only with content capture on."""
        self.finished = False

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

    def observe_message(self, message: Any) -> None:
        """Model, id, stop reason and usage of a whole Message (parsed or decoded)."""
        reason = _get(message, "stop_reason")
        self.set_response(
            model=_get(message, "model"),
            id=_get(message, "id"),
            finish_reasons=[reason] if isinstance(reason, str) else None,
        )
        self._observe_usage(_get(message, "usage"), input_too=True)
        if self.capture_content:
            blocks = _get(message, "content") or []
            text = "".join(
                _get(block, "text") or "" for block in blocks if _get(block, "type") == "text"
            )
            self._set_output(text)

    def _observe_usage(self, usage: Any, *, input_too: bool) -> None:
        if usage is None:
            return
        # As the conventions (and the SDK's span) count them: cached input tokens are input
        input_tokens = (
            _count(usage, "input_tokens")
            + _count(usage, "cache_read_input_tokens")
            + _count(usage, "cache_creation_input_tokens")
            if input_too and isinstance(_get(usage, "input_tokens"), int)
            else None
        )
        output = _get(usage, "output_tokens")
        self.set_usage(
            input_tokens=input_tokens, output_tokens=output if isinstance(output, int) else None
        )

    def observe_event(self, event: Any) -> None:
        """One event of a stream, as the SDK's ``Stream`` hands it on."""
        kind = _get(event, "type")
        if kind == "message_start":
            message = _get(event, "message")
            self.set_response(model=_get(message, "model"), id=_get(message, "id"))
            self._observe_usage(_get(message, "usage"), input_too=True)
        elif kind == "content_block_delta":
            self.first_chunk()
            if self.text is not None:
                piece = _get(_get(event, "delta"), "text")
                if isinstance(piece, str) and sum(map(len, self.text)) < self.content_limit:
                    self.text.append(piece)
        elif kind == "message_delta":
            reason = _get(_get(event, "delta"), "stop_reason")
            if isinstance(reason, str):
                self.set_response(finish_reasons=[reason])
            self._observe_usage(_get(event, "usage"), input_too=False)

    def _set_output(self, text: str) -> None:
        message: dict[str, Any] = {"role": "assistant", "parts": text_parts(text)}
        if self.finish_reasons:
            message["finish_reason"] = self.finish_reasons[0]
        self.set_messages(output=[message])

    def finish(self, error: BaseException | None) -> None:
        """The body ended (read, closed, failed or dropped): the call is over; once."""
        if self.finished:
            return
        self.finished = True
        try:
            if self.text is not None:
                self._set_output("".join(self.text))
        finally:
            self.end(error)


class _OpenCalls:
    """Calls whose response body is still open, by that response (held weakly).

    The SDK's response, stream and raw-response objects are left as they are:
    poolscope's hooks on their classes look the call up here. A response
    dropped unread ends its call when it is collected.
    """

    def __init__(self) -> None:
        self._calls: weakref.WeakKeyDictionary[
            Any, tuple[_AnthropicCall, weakref.finalize[Any, Any]]
        ] = weakref.WeakKeyDictionary()

    def add(self, response: Any, call: _AnthropicCall) -> None:
        self._calls[response] = (call, weakref.finalize(response, call.finish, None))

    def get(self, response: Any) -> _AnthropicCall | None:
        try:
            found = self._calls.get(response) if response is not None else None
        except TypeError:  # a stand-in for a response that cannot be referred to weakly
            return None
        return found[0] if found is not None else None

    def end(self, response: Any, error: BaseException | None = None) -> None:
        try:
            found = self._calls.pop(response, None) if response is not None else None
        except TypeError:
            return
        if found is not None:
            call, finalizer = found
            finalizer.detach()  # ended: the call need not live as long as its response
            call.finish(error)


_open = _OpenCalls()


def _observed(call: _AnthropicCall, event: Any) -> None:
    try:
        call.observe_event(event)
    except Exception:
        report_internal_error("reading an anthropic stream event")


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


def _settle(call: _AnthropicCall, result: Any) -> None:
    """After ``_request`` returned: end the call now, or when its open body ends."""
    try:
        call.detach()  # a stream is read later, maybe elsewhere: the span is no longer current
        # a stream's response, a raw response's, or none: a parsed Message, its body read
        response = getattr(result, "response", None) or getattr(result, "http_response", None)
        if response is not None and not response.is_closed:
            _open.add(response, call)
            return
        message = result if response is None else _decoded(response)
        if message is not None:
            call.observe_message(message)
        call.finish(None)
    except Exception:
        report_internal_error("recording an anthropic result")


def _decoded(response: Any) -> Any:
    """The JSON body of a response already read, else None."""
    media = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        return None
    try:
        return response.json()
    except Exception:
        return None


def _wrap_sync_request(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def _request(self: Any, cast_to: Any, options: Any, *args: Any, **kwargs: Any) -> Any:
        call = _begin(self, options, kwargs)
        if call is None:
            return original(self, cast_to, options, *args, **kwargs)
        try:
            result = original(self, cast_to, options, *args, **kwargs)
        except BaseException as exc:
            call.finish(exc)
            raise
        _settle(call, result)
        return result

    return _request


def _wrap_async_request(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def _request(self: Any, cast_to: Any, options: Any, *args: Any, **kwargs: Any) -> Any:
        call = _begin(self, options, kwargs)
        if call is None:
            return await original(self, cast_to, options, *args, **kwargs)
        try:
            result = await original(self, cast_to, options, *args, **kwargs)
        except BaseException as exc:
            call.finish(exc)
            raise
        _settle(call, result)
        return result

    return _request


def _wrap_sync_events(
    original: Callable[..., Generator[Any, None, None]],
) -> Callable[..., Iterator[Any]]:
    """``Stream.__stream__``: the events of a call's stream, and its end."""

    @functools.wraps(original)
    def __stream__(self: Any) -> Iterator[Any]:
        response = getattr(self, "response", None)
        call = _open.get(response)
        if call is None:
            yield from original(self)
            return
        events = original(self)
        error: BaseException | None = None
        try:
            for event in events:
                _observed(call, event)
                yield event
        except Exception as exc:
            error = exc
            raise
        finally:
            events.close()
            _open.end(response, error)

    return __stream__


def _wrap_async_events(
    original: Callable[..., AsyncIterator[Any]],
) -> Callable[..., AsyncIterator[Any]]:
    """``AsyncStream.__stream__``: the events of a call's stream, and its end."""

    @functools.wraps(original)
    async def __stream__(self: Any) -> AsyncIterator[Any]:
        response = getattr(self, "response", None)
        call = _open.get(response)
        events = original(self)
        error: BaseException | None = None
        try:
            async for event in events:
                if call is not None:
                    _observed(call, event)
                yield event
        except Exception as exc:
            error = exc
            raise
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
            if call is not None:
                _open.end(response, error)

    return __stream__


def _wrap_sync_end(
    original: Callable[..., Any], attribute: str, *, read: bool
) -> Callable[..., Any]:
    """A stream's or a raw response's ``close()`` (or ``read()``): the end of its call."""

    @functools.wraps(original)
    def ended(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        _body_ended(getattr(self, attribute, None), read=read)
        return result

    return ended


def _wrap_async_end(
    original: Callable[..., Any], attribute: str, *, read: bool
) -> Callable[..., Any]:
    @functools.wraps(original)
    async def ended(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = await original(self, *args, **kwargs)
        _body_ended(getattr(self, attribute, None), read=read)
        return result

    return ended


def _body_ended(response: Any, *, read: bool) -> None:
    call = _open.get(response)
    if call is None:
        return
    if read:  # a raw response's body the application read itself: what it says
        message = _decoded(response)
        if message is not None:
            try:
                call.observe_message(message)
            except Exception:
                report_internal_error("reading an anthropic response")
    _open.end(response)


def patches() -> list[Patch]:
    try:
        base = importlib.import_module("anthropic._base_client")
        streaming = importlib.import_module("anthropic._streaming")
        responses = importlib.import_module("anthropic._response")
    except ImportError:
        return []  # anthropic is not installed
    hooks: list[tuple[Any, str, Callable[[Any], Any]]] = [
        (base.SyncAPIClient, "_request", _wrap_sync_request),
        (base.AsyncAPIClient, "_request", _wrap_async_request),
        (streaming.Stream, "__stream__", _wrap_sync_events),
        (streaming.AsyncStream, "__stream__", _wrap_async_events),
        (streaming.Stream, "close", lambda f: _wrap_sync_end(f, "response", read=False)),
        (streaming.AsyncStream, "close", lambda f: _wrap_async_end(f, "response", read=False)),
        (responses.APIResponse, "read", lambda f: _wrap_sync_end(f, "http_response", read=True)),
        (responses.APIResponse, "close", lambda f: _wrap_sync_end(f, "http_response", read=False)),
        (responses.AsyncAPIResponse, "read",
         lambda f: _wrap_async_end(f, "http_response", read=True)),
        (responses.AsyncAPIResponse, "close",
         lambda f: _wrap_async_end(f, "http_response", read=False)),
    ]  # fmt: skip
    found = []
    for owner, name, wrap in hooks:
        original = owner.__dict__.get(name)
        if original is not None:
            found.append(Patch(owner, name, wrap(original)))
    return found
