"""A small OTLP/HTTP trace receiver on loopback, so the demo needs no collector.

It keeps what the report's waterfall needs (names, ids, times and a few
attributes) of at most ``MAX_SPANS`` spans, and answers every export with
success.
"""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from ... import semconv

__all__ = ["ReceivedSpan", "TraceReceiver"]

MAX_SPANS: Final = 200_000
_KEPT_ATTRIBUTES: Final = frozenset(
    {
        semconv.ATTR_EXECUTOR_NAME,
        semconv.ATTR_EXECUTOR_WAIT_TOTAL,
        semconv.ATTR_EXECUTOR_WORKER_LIMIT,
        semconv.ATTR_EXECUTOR_WORKER_BUSY,
        semconv.ATTR_HTTP_ROUTE,
        semconv.ATTR_GEN_AI_REQUEST_MODEL,
    }
)


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    service: str
    attributes: dict[str, Any]

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class TraceReceiver:
    """``with TraceReceiver() as receiver:`` then export to ``receiver.endpoint``."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        self._pb = trace_service_pb2
        self.spans: list[ReceivedSpan] = []
        self.dropped = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                status = 200 if self.path == "/v1/traces" and receiver._take(body) else 400
                reply = receiver._pb.ExportTraceServiceResponse().SerializeToString()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the demo prints its own progress

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="poolscope-otlp-receiver", daemon=True
        )

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> TraceReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _take(self, body: bytes) -> bool:
        request = self._pb.ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except Exception:  # a malformed export: refuse it, keep serving
            return False
        received = []
        for resource_spans in request.resource_spans:
            service = ""
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    service = str(_value(attribute.value))
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            name=span.name,
                            kind=span.kind,
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            service=service,
                            attributes={
                                a.key: _value(a.value)
                                for a in span.attributes
                                if a.key in _KEPT_ATTRIBUTES
                            },
                        )
                    )
        with self._lock:
            room = max(0, MAX_SPANS - len(self.spans))
            self.spans.extend(received[:room])
            self.dropped += len(received) - min(room, len(received))
        return True

    def snapshot(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)
