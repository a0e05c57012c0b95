"""Starve the event loop's default executor and watch poolscope say so.

Twenty "requests" arrive at once; each pushes a 200 ms blocking call into the
loop's default executor with ``asyncio.to_thread``, the way an async endpoint
calls a sync SDK. The executor has ``min(32, cpu + 4)`` threads, so most
requests queue for a seat. poolscope splits every request's time into the
wait for a worker and the run, and reports the pool's cap.

    python examples/quickstart.py
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import poolscope
from poolscope import semconv

REQUESTS = 20
BLOCKING_CALL_S = 0.2


def blocking_sdk_call() -> str:
    time.sleep(BLOCKING_CALL_S)  # a sync HTTP/LLM call
    return "ok"


async def main() -> None:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    poolscope.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    tracer = tracer_provider.get_tracer("quickstart")

    async def request(number: int) -> None:
        with tracer.start_as_current_span(f"request {number:02d}"):
            await asyncio.to_thread(blocking_sdk_call)

    started = time.perf_counter()
    await asyncio.gather(*(request(n) for n in range(REQUESTS)))
    elapsed = time.perf_counter() - started

    # as asyncio sizes it: Python 3.13 counts the CPUs this process may use
    limit = min(32, (getattr(os, "process_cpu_count", os.cpu_count)() or 1) + 4)
    print(
        f"{REQUESTS} requests, each a {BLOCKING_CALL_S * 1000:.0f} ms blocking call, through "
        f"asyncio's default executor ({limit} threads): {elapsed:.2f} s\n"
    )
    print(
        f"{'request':<12}{'total ms':>10}{'waiting ms':>12}{'running ms':>12}  busy/limit at submit"
    )
    for request_span, wait, run in _requests(spans.get_finished_spans()):
        seen = "-"
        if wait is not None and wait.attributes:
            busy = wait.attributes[semconv.ATTR_EXECUTOR_WORKER_BUSY]
            seen = f"{busy}/{wait.attributes[semconv.ATTR_EXECUTOR_WORKER_LIMIT]}"
        waited = _ms(wait) if wait is not None else 0.0
        total = _ms(request_span)
        print(f"{request_span.name:<12}{total:>10.0f}{waited:>12.0f}{_ms(run):>12.0f}  {seen}")
    poolscope.uninstrument()


def _ms(span: ReadableSpan) -> float:
    return ((span.end_time or 0) - (span.start_time or 0)) / 1e6


def _requests(
    finished: Sequence[ReadableSpan],
) -> list[tuple[ReadableSpan, ReadableSpan | None, ReadableSpan]]:
    """(request span, its executor.wait span if any, its executor.run span), by request name."""
    children: dict[int, dict[str, ReadableSpan]] = {}
    requests = []
    for span in finished:
        if span.parent is None:
            requests.append(span)
        else:
            children.setdefault(span.parent.span_id, {})[span.name] = span
    return [
        (
            request,
            children[request.context.span_id].get(semconv.SPAN_WAIT),
            children[request.context.span_id][semconv.SPAN_RUN],
        )
        for request in sorted(requests, key=lambda span: span.name)
    ]


if __name__ == "__main__":
    asyncio.run(main())
