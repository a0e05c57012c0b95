"""The telemetry contract: every metric, span and attribute name poolscope emits.

This module is the single source of truth. The package records with these
constants; the docs, dashboards, alert rules and tests are generated from or
checked against them. Changing a value here is a breaking change for every
dashboard built on poolscope.

Names follow the OpenTelemetry semantic conventions where one exists
(``code.function.name``, ``error.type``); the ``executor.*`` namespace is
poolscope's own.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ATTR_CODE_FILE_PATH",
    "ATTR_CODE_FUNCTION_NAME",
    "ATTR_CODE_LINE_NUMBER",
    "ATTR_CODE_STACKTRACE",
    "ATTR_CPU_MODE",
    "ATTR_ERROR_TYPE",
    "ATTR_EVENTLOOP_BLOCKED_BUSY_THREADS",
    "ATTR_EVENTLOOP_BLOCKED_CAUSE",
    "ATTR_EVENTLOOP_BLOCKED_CPU_TIME",
    "ATTR_EVENTLOOP_BLOCKED_CPU_WAIT",
    "ATTR_EVENTLOOP_BLOCKED_GC_TIME",
    "ATTR_EVENTLOOP_STATE",
    "ATTR_EXECUTOR_IO_LIBRARY",
    "ATTR_EXECUTOR_NAME",
    "ATTR_EXECUTOR_PINNED_IO",
    "ATTR_EXECUTOR_PINNED_IO_DURATION",
    "ATTR_EXECUTOR_PINNED_LLM",
    "ATTR_EXECUTOR_PINNED_LLM_DURATION",
    "ATTR_EXECUTOR_SPANS_DROPPED",
    "ATTR_EXECUTOR_TASK_CANCELLED",
    "ATTR_EXECUTOR_TASK_COUNT",
    "ATTR_EXECUTOR_TASK_NESTED",
    "ATTR_EXECUTOR_TASK_PENDING",
    "ATTR_EXECUTOR_TYPE",
    "ATTR_EXECUTOR_WAIT_MAX",
    "ATTR_EXECUTOR_WAIT_TOTAL",
    "ATTR_EXECUTOR_WORKER_BUSY",
    "ATTR_EXECUTOR_WORKER_LIMIT",
    "ATTR_EXECUTOR_WORKER_STATE",
    "ATTR_GEN_AI_INPUT_MESSAGES",
    "ATTR_GEN_AI_OPERATION_NAME",
    "ATTR_GEN_AI_OUTPUT_MESSAGES",
    "ATTR_GEN_AI_PROVIDER_NAME",
    "ATTR_GEN_AI_REQUEST_MODEL",
    "ATTR_GEN_AI_REQUEST_STREAM",
    "ATTR_GEN_AI_RESPONSE_FINISH_REASONS",
    "ATTR_GEN_AI_RESPONSE_ID",
    "ATTR_GEN_AI_RESPONSE_MODEL",
    "ATTR_GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK",
    "ATTR_GEN_AI_TOKEN_TYPE",
    "ATTR_GEN_AI_USAGE_INPUT_TOKENS",
    "ATTR_GEN_AI_USAGE_OUTPUT_TOKENS",
    "ATTR_HTTP_METHOD_OLD",
    "ATTR_HTTP_REQUEST_METHOD",
    "ATTR_HTTP_RESPONSE_STATUS_CODE",
    "ATTR_HTTP_ROUTE",
    "ATTR_HTTP_TARGET_OLD",
    "ATTR_HTTP_URL_OLD",
    "ATTR_HTTP_USER_AGENT_OLD",
    "ATTR_SERVER_ADDRESS",
    "ATTR_SERVER_PORT",
    "ATTR_URL_FULL",
    "ATTR_URL_QUERY",
    "ATTR_USER_AGENT_ORIGINAL",
    "BLOCK_CAUSES_OWN",
    "BLOCK_CAUSE_CALL",
    "BLOCK_CAUSE_CPU",
    "BLOCK_CAUSE_CPU_WAIT",
    "BLOCK_CAUSE_GC",
    "BLOCK_CAUSE_GIL",
    "BUCKETS_PER_DECADE",
    "CPU_MODE_SYSTEM",
    "CPU_MODE_USER",
    "DURATION_BUCKETS",
    "ERROR_NESTED_DEADLOCK",
    "EVENTLOOP_STATE_ACTIVE",
    "EVENTLOOP_STATE_IDLE",
    "EXECUTOR_TYPES",
    "EXECUTOR_TYPE_LIMITER",
    "EXECUTOR_TYPE_PROCESS_POOL",
    "EXECUTOR_TYPE_SEMAPHORE",
    "EXECUTOR_TYPE_THREAD_POOL",
    "GEN_AI_DURATION_BUCKETS",
    "GEN_AI_TOKEN_BUCKETS",
    "GEN_AI_TOKEN_TYPE_INPUT",
    "GEN_AI_TOKEN_TYPE_OUTPUT",
    "LAG_BUCKETS",
    "METRIC_EVENTLOOP_BLOCK_DURATION",
    "METRIC_EVENTLOOP_CPU_TIME",
    "METRIC_EVENTLOOP_LAG",
    "METRIC_EVENTLOOP_TIME",
    "METRIC_EXECUTOR_IO_DURATION",
    "METRIC_GEN_AI_OPERATION_DURATION",
    "METRIC_GEN_AI_TIME_TO_FIRST_CHUNK",
    "METRIC_GEN_AI_TOKEN_USAGE",
    "METRIC_HTTP_SERVER_REQUEST_DURATION",
    "METRIC_PROCESS_CPU_TIME",
    "METRIC_TASK_PENDING",
    "METRIC_TASK_RESUME_DURATION",
    "METRIC_TASK_RUN_DURATION",
    "METRIC_TASK_WAIT_DURATION",
    "METRIC_WORKER_COUNT",
    "METRIC_WORKER_LIMIT",
    "POOL_ANYIO_DEFAULT",
    "POOL_ASYNCIO_DEFAULT",
    "POOL_OTHER",
    "REDACTED",
    "SITE_OTHER",
    "SPAN_EVENTLOOP_BLOCKED",
    "SPAN_RUN",
    "SPAN_WAIT",
    "UNIT_SECONDS",
    "UNIT_TASK",
    "UNIT_TOKEN",
    "UNIT_WORKER",
    "WORKER_STATE_BUSY",
    "WORKER_STATE_IDLE",
]

# --- Metrics -----------------------------------------------------------------

METRIC_TASK_WAIT_DURATION: Final = "executor.task.wait.duration"
"""Histogram: time from submit until a worker started the task (queue wait)."""

METRIC_TASK_RUN_DURATION: Final = "executor.task.run.duration"
"""Histogram: time from start to end of the task on the worker."""

METRIC_WORKER_COUNT: Final = "executor.worker.count"
"""Up-down counter: workers by ``executor.worker.state`` (busy, or idle = free seats)."""

METRIC_WORKER_LIMIT: Final = "executor.worker.limit"
"""Up-down counter: the cap (max_workers, total tokens, semaphore value)."""

METRIC_TASK_PENDING: Final = "executor.task.pending"
"""Up-down counter: tasks waiting for a worker right now."""

METRIC_TASK_RESUME_DURATION: Final = "executor.task.resume.duration"
"""Histogram: time from the task's end until the awaiting coroutine ran again.

Long resumes with short waits mean a busy event loop, not a starved pool.
"""

METRIC_EVENTLOOP_LAG: Final = "asyncio.eventloop.lag"
"""Histogram: how late the event loop ran a callback scheduled for a given time."""

METRIC_EVENTLOOP_TIME: Final = "asyncio.eventloop.time"
"""Counter: seconds the event loop spent by ``asyncio.eventloop.state``.

``active``: running callbacks; ``idle``: waiting for events. The rate of
``active`` is the loop's utilization, as Node.js reports it: near 1, the loop
is the bottleneck, whatever the pools do.
"""

METRIC_EVENTLOOP_CPU_TIME: Final = "asyncio.eventloop.cpu.time"
"""Counter: CPU seconds the event loop's thread used.

Far below the active time, the loop thread was not running: it waited for a
blocking call, for the GIL, or for a CPU.
"""

METRIC_EVENTLOOP_BLOCK_DURATION: Final = "asyncio.eventloop.block.duration"
"""Histogram: callbacks that held the loop for at least ``loop_block_threshold``.

By the line that held it (``code.function.name``, ``code.file.path``,
``code.line.number``): the loop's own blocking calls, counted and timed.
"""

METRIC_HTTP_SERVER_REQUEST_DURATION: Final = "http.server.request.duration"
"""Histogram: the request latency OpenTelemetry's ASGI middleware records (``configure()`` gives it
the bucket layout of :data:`DURATION_BUCKETS`)."""

METRIC_EXECUTOR_IO_DURATION: Final = "executor.io.duration"
"""Histogram: blocking HTTP calls made on a pool's worker (``requests``, ``httpx.Client``,
``urllib3``, ``urllib.request``), by pool, library and server: the worker-seconds such
calls hold, and how long each takes."""

METRIC_PROCESS_CPU_TIME: Final = "process.cpu.time"
"""Counter: the process's CPU seconds by ``cpu.mode`` (OpenTelemetry's process conventions)."""

UNIT_SECONDS: Final = "s"
UNIT_WORKER: Final = "{worker}"
UNIT_TASK: Final = "{task}"

BUCKETS_PER_DECADE: Final = 26
"""Density of :data:`DURATION_BUCKETS` from 10 ms to 31.6 s: consecutive bounds differ by 10%."""

DURATION_BUCKETS: Final[tuple[float, ...]] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    *(float(f"{0.01 * 10 ** (k / BUCKETS_PER_DECADE):.3g}") for k in range(92)),
    60.0,
)
"""Bucket boundaries (s) for queue waits, runs and request latency: 0.5 ms to 60 s.

From 10 ms to 31.6 s, 26 bounds per decade (0.01, 0.0109, 0.0119, ... 31.6),
so each bound is at most 10% above the one before. A quantile read from the
histogram the way Prometheus' ``histogram_quantile`` reads it (linear inside
a bucket) is then within 10% of the exact value, even when every wait falls
at the same spot, as the waits of a steadily starved pool do; with the
1-2.5-5 layout such waits of 2.9 s read as 4.9 s at p95. The SDK's default
boundaries are meant for milliseconds and would put every wait under 5 s
into the first bucket of a seconds histogram.
"""

LAG_BUCKETS: Final[tuple[float, ...]] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Bucket boundaries (s) for the event loop's delays: lag, resume and blocks, from 1 ms.

These are read against thresholds (100 ms of lag), not as quantiles to the
millisecond, so a coarse layout keeps the series few.
"""

# GenAI client metrics, as the OpenTelemetry GenAI semantic conventions name them.
METRIC_GEN_AI_OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
METRIC_GEN_AI_TOKEN_USAGE: Final = "gen_ai.client.token.usage"
METRIC_GEN_AI_TIME_TO_FIRST_CHUNK: Final = "gen_ai.client.operation.time_to_first_chunk"
UNIT_TOKEN: Final = "{token}"

GEN_AI_DURATION_BUCKETS: Final[tuple[float, ...]] = tuple(0.01 * 2**i for i in range(14))
"""The conventions' advice for GenAI durations: 0.01 s doubling to 81.92 s."""

GEN_AI_TOKEN_BUCKETS: Final[tuple[int, ...]] = tuple(4**i for i in range(14))
"""The conventions' advice for token counts: 1, 4, 16, ... 67,108,864."""

# --- Spans -------------------------------------------------------------------

SPAN_WAIT: Final = "executor.wait"
"""Span from submit to start; child of the span current at submit."""

SPAN_RUN: Final = "executor.run"
"""Span from start to end; sibling of the wait span, parent of spans made in the worker."""

SPAN_EVENTLOOP_BLOCKED: Final = "asyncio.eventloop.blocked"
"""Span over a stretch the event loop could not run callbacks, with the blocking stack."""

# --- Attributes --------------------------------------------------------------

ATTR_EXECUTOR_NAME: Final = "executor.name"
ATTR_EXECUTOR_TYPE: Final = "executor.type"
ATTR_EXECUTOR_WORKER_STATE: Final = "executor.worker.state"
ATTR_EXECUTOR_WORKER_LIMIT: Final = "executor.worker.limit"
ATTR_EXECUTOR_WORKER_BUSY: Final = "executor.worker.busy"
ATTR_EXECUTOR_TASK_PENDING: Final = "executor.task.pending"
ATTR_EXECUTOR_TASK_CANCELLED: Final = "executor.task.cancelled"
ATTR_EXECUTOR_TASK_NESTED: Final = "executor.task.nested"
"""Task spans: submitted from a worker of the same pool (a self-deadlock risk in a full pool)."""
ATTR_EXECUTOR_WAIT_TOTAL: Final = "executor.wait.total"
"""Server span: seconds the request's tasks spent waiting for workers, summed."""
ATTR_EXECUTOR_WAIT_MAX: Final = "executor.wait.max"
"""Server span: the longest single wait among the request's tasks, seconds."""
ATTR_EXECUTOR_TASK_COUNT: Final = "executor.task.count"
"""Server span: how many tasks the request handed to pools."""
ATTR_EXECUTOR_SPANS_DROPPED: Final = "executor.spans.dropped"
"""Server span: task spans not emitted because the request's span budget ran out."""
ATTR_CODE_FUNCTION_NAME: Final = "code.function.name"
ATTR_CODE_STACKTRACE: Final = "code.stacktrace"
ATTR_CODE_FILE_PATH: Final = "code.file.path"
ATTR_CODE_LINE_NUMBER: Final = "code.line.number"
ATTR_ERROR_TYPE: Final = "error.type"
ATTR_HTTP_ROUTE: Final = "http.route"
ATTR_EVENTLOOP_STATE: Final = "asyncio.eventloop.state"
ATTR_CPU_MODE: Final = "cpu.mode"
ATTR_EVENTLOOP_BLOCKED_CPU_TIME: Final = "asyncio.eventloop.blocked.cpu_time"
"""Blocked-loop span: seconds of the block the loop thread ran on a CPU (Python or C code)."""
ATTR_EVENTLOOP_BLOCKED_CPU_WAIT: Final = "asyncio.eventloop.blocked.cpu_wait"
"""Blocked-loop span: seconds the loop thread was runnable but waited for a CPU (Linux)."""
ATTR_EVENTLOOP_BLOCKED_GC_TIME: Final = "asyncio.eventloop.blocked.gc_time"
"""Blocked-loop span: seconds of the block spent in garbage collection, on any thread."""
ATTR_EVENTLOOP_BLOCKED_CAUSE: Final = "asyncio.eventloop.blocked.cause"
"""Blocked-loop span and ``asyncio.eventloop.block.duration``: what the loop thread did meanwhile.

``cpu``: ran on a CPU; ``call``: sat in a blocking call; ``gil``: waited for the
GIL while other threads ran; ``cpu_wait``: was runnable but waited for a core.
Only ``cpu`` and ``call`` are the blocking callback's own doing.
"""
ATTR_EVENTLOOP_BLOCKED_BUSY_THREADS: Final = "asyncio.eventloop.blocked.busy_threads"
"""Blocked-loop span: the other threads that ran on a CPU for much of the block, busiest first.

Threads running Python hold the GIL while they run: when the loop thread
itself was mostly off the CPU, these held it up.
"""
ATTR_SERVER_ADDRESS: Final = "server.address"
ATTR_SERVER_PORT: Final = "server.port"
ATTR_HTTP_REQUEST_METHOD: Final = "http.request.method"
ATTR_HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
ATTR_HTTP_METHOD_OLD: Final = "http.method"
"""The pre-stable name of ``http.request.method``: OpenTelemetry's HTTP client
instrumentations still emit it unless ``OTEL_SEMCONV_STABILITY_OPT_IN`` says ``http``."""
ATTR_EXECUTOR_IO_LIBRARY: Final = "executor.io.library"
"""Blocking HTTP call spans and ``executor.io.duration``: the client library that made the
call (``requests``, ``httpx``, ``urllib3``, ``urllib``)."""

# Server-span attributes that carry what the client sent; poolscope does not
# make them but redacts them (see ``capture_request_details``).
ATTR_URL_QUERY: Final = "url.query"
ATTR_URL_FULL: Final = "url.full"
ATTR_USER_AGENT_ORIGINAL: Final = "user_agent.original"
ATTR_HTTP_URL_OLD: Final = "http.url"
ATTR_HTTP_TARGET_OLD: Final = "http.target"
ATTR_HTTP_USER_AGENT_OLD: Final = "http.user_agent"
REDACTED: Final = "REDACTED"
"""What a redacted value becomes, as the HTTP semantic conventions redact ``url.query``."""

ATTR_EXECUTOR_PINNED_LLM: Final = "executor.pinned.llm"
"""Server span: a sync LLM call held a pool worker while serving this request."""
ATTR_EXECUTOR_PINNED_LLM_DURATION: Final = "executor.pinned.llm.duration"
"""Server span: seconds pool workers spent blocked in LLM calls for this request."""
ATTR_EXECUTOR_PINNED_IO: Final = "executor.pinned.io"
"""Server span: a blocking HTTP call (not an LLM SDK's) held a pool worker for this request."""
ATTR_EXECUTOR_PINNED_IO_DURATION: Final = "executor.pinned.io.duration"
"""Server span: seconds pool workers spent blocked in such HTTP calls for this request."""

ATTR_GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
ATTR_GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
ATTR_GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
ATTR_GEN_AI_REQUEST_STREAM: Final = "gen_ai.request.stream"
ATTR_GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
ATTR_GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
ATTR_GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
ATTR_GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"
ATTR_GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
ATTR_GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
ATTR_GEN_AI_TOKEN_TYPE: Final = "gen_ai.token.type"
ATTR_GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
"""Prompt messages, JSON; only with content capture switched on."""
ATTR_GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
"""Completion messages, JSON; only with content capture switched on."""
GEN_AI_TOKEN_TYPE_INPUT: Final = "input"
GEN_AI_TOKEN_TYPE_OUTPUT: Final = "output"

# --- Attribute values --------------------------------------------------------

EXECUTOR_TYPE_THREAD_POOL: Final = "thread_pool"
EXECUTOR_TYPE_PROCESS_POOL: Final = "process_pool"
EXECUTOR_TYPE_LIMITER: Final = "limiter"
EXECUTOR_TYPE_SEMAPHORE: Final = "semaphore"
EXECUTOR_TYPES: Final[tuple[str, ...]] = (
    EXECUTOR_TYPE_THREAD_POOL,
    EXECUTOR_TYPE_PROCESS_POOL,
    EXECUTOR_TYPE_LIMITER,
    EXECUTOR_TYPE_SEMAPHORE,
)

WORKER_STATE_BUSY: Final = "busy"
WORKER_STATE_IDLE: Final = "idle"

BLOCK_CAUSE_CPU: Final = "cpu"
BLOCK_CAUSE_CALL: Final = "call"
BLOCK_CAUSE_GIL: Final = "gil"
BLOCK_CAUSE_CPU_WAIT: Final = "cpu_wait"
BLOCK_CAUSE_GC: Final = "gc"
BLOCK_CAUSES_OWN: Final = (BLOCK_CAUSE_CPU, BLOCK_CAUSE_CALL)
"""Causes of a block that the blocking callback is to blame for."""

EVENTLOOP_STATE_ACTIVE: Final = "active"
EVENTLOOP_STATE_IDLE: Final = "idle"
CPU_MODE_USER: Final = "user"
CPU_MODE_SYSTEM: Final = "system"

POOL_ASYNCIO_DEFAULT: Final = "asyncio.default"
"""Name of an event loop's default executor (``run_in_executor(None, ...)``, ``to_thread``)."""

POOL_ANYIO_DEFAULT: Final = "anyio.default"
"""Name of anyio's default thread limiter (Starlette/FastAPI sync paths)."""

ERROR_NESTED_DEADLOCK: Final = "nested_offload_deadlock"
"""``error.type`` of a wait span ended early: every worker runs a task that waits on nested work."""

POOL_OTHER: Final = "other"
"""The pool name metrics use past the cap on distinct names (``max_pool_names``)."""

SITE_OTHER: Final = "other"
"""``code.function.name`` of blocked-loop records past the cap on distinct blocking lines."""
