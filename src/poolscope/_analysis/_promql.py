"""poolscope's metrics as Prometheus sees them: series and label names.

The collector's Prometheus exporter (and the SDK's) turn an OpenTelemetry
metric into Prometheus series by rule: dots become underscores, the unit
``s`` becomes a ``_seconds`` suffix, annotation units such as ``{worker}``
are dropped, monotonic counters get ``_total``, and the resource's
``service.name`` / ``service.instance.id`` become ``job`` / ``instance``.
The names are derived here from :mod:`poolscope.semconv`, once; the
queries (:mod:`._queries`), the readers of an app's endpoint and nothing
else spell a series name.
"""

from __future__ import annotations

from typing import Final

from .. import semconv

__all__ = [
    "BLOCK",
    "BLOCK_CAUSE",
    "CODE_FILE",
    "CODE_FUNCTION",
    "CODE_LINE",
    "CPU_MODE",
    "HTTP_ACTIVE",
    "HTTP_DURATION",
    "INSTANCE",
    "IO_DURATION",
    "IO_LIBRARY",
    "IO_TARGET_KEY",
    "LAG",
    "LIMIT",
    "LLM_DURATION",
    "LLM_FIRST_CHUNK",
    "LLM_TOKENS",
    "LOOP_CPU",
    "LOOP_KEY",
    "LOOP_STATE",
    "LOOP_TIME",
    "MODEL",
    "PENDING",
    "POOL",
    "POOL_KEY",
    "POOL_TYPE",
    "PROCESS_CPU",
    "RESUME",
    "ROUTE",
    "RUN",
    "SERVER_ADDRESS",
    "SERVER_PORT",
    "SERVICE",
    "SERVICE_INSTANCE_ID",
    "SERVICE_NAME",
    "SITE_KEY",
    "SPAN_CALLS",
    "SPAN_DURATION",
    "SPAN_NAME",
    "TARGET_INFO",
    "TOKEN_TYPE",
    "WAIT",
    "WORKERS",
    "WORKER_LIMIT",
    "WORKER_STATE",
    "by",
    "label",
    "metric_name",
    "on",
    "selector",
]

_UNIT_SUFFIXES: Final = {semconv.UNIT_SECONDS: "_seconds"}


def metric_name(name: str, unit: str = "", *, counter: bool = False) -> str:
    """The Prometheus name of the OpenTelemetry metric ``name`` with ``unit``."""
    base = name.replace(".", "_")
    if not unit.startswith("{"):
        suffix = _UNIT_SUFFIXES.get(unit, "")
        if suffix and not base.endswith(suffix):
            base += suffix
    return base + "_total" if counter else base


def label(attribute: str) -> str:
    """The Prometheus label of the OpenTelemetry attribute ``attribute``."""
    return attribute.replace(".", "_")


# --- Series --------------------------------------------------------------------

WAIT: Final = metric_name(semconv.METRIC_TASK_WAIT_DURATION, semconv.UNIT_SECONDS)
RUN: Final = metric_name(semconv.METRIC_TASK_RUN_DURATION, semconv.UNIT_SECONDS)
RESUME: Final = metric_name(semconv.METRIC_TASK_RESUME_DURATION, semconv.UNIT_SECONDS)
WORKERS: Final = metric_name(semconv.METRIC_WORKER_COUNT, semconv.UNIT_WORKER)
LIMIT: Final = metric_name(semconv.METRIC_WORKER_LIMIT, semconv.UNIT_WORKER)
PENDING: Final = metric_name(semconv.METRIC_TASK_PENDING, semconv.UNIT_TASK)
LAG: Final = metric_name(semconv.METRIC_EVENTLOOP_LAG, semconv.UNIT_SECONDS)
BLOCK: Final = metric_name(semconv.METRIC_EVENTLOOP_BLOCK_DURATION, semconv.UNIT_SECONDS)
LOOP_TIME: Final = metric_name(semconv.METRIC_EVENTLOOP_TIME, semconv.UNIT_SECONDS, counter=True)
LOOP_CPU: Final = metric_name(semconv.METRIC_EVENTLOOP_CPU_TIME, semconv.UNIT_SECONDS, counter=True)
PROCESS_CPU: Final = metric_name(
    semconv.METRIC_PROCESS_CPU_TIME, semconv.UNIT_SECONDS, counter=True
)
LLM_DURATION: Final = metric_name(semconv.METRIC_GEN_AI_OPERATION_DURATION, semconv.UNIT_SECONDS)
IO_DURATION: Final = metric_name(semconv.METRIC_EXECUTOR_IO_DURATION, semconv.UNIT_SECONDS)
LLM_FIRST_CHUNK: Final = metric_name(
    semconv.METRIC_GEN_AI_TIME_TO_FIRST_CHUNK, semconv.UNIT_SECONDS
)
LLM_TOKENS: Final = metric_name(semconv.METRIC_GEN_AI_TOKEN_USAGE, semconv.UNIT_TOKEN)

# The HTTP server metrics of OpenTelemetry's ASGI middleware (stable HTTP conventions).
HTTP_DURATION: Final = metric_name(
    semconv.METRIC_HTTP_SERVER_REQUEST_DURATION, semconv.UNIT_SECONDS
)
HTTP_ACTIVE: Final = metric_name("http.server.active_requests", "{request}")

SPAN_METRICS_NAMESPACE: Final = "traces.span.metrics"
"""The span metrics connector's namespace, pinned in ``collector/config.yaml``."""
SPAN_DURATION: Final = metric_name(f"{SPAN_METRICS_NAMESPACE}.duration", semconv.UNIT_SECONDS)
SPAN_CALLS: Final = metric_name(f"{SPAN_METRICS_NAMESPACE}.calls", counter=True)

# --- Labels --------------------------------------------------------------------

SERVICE: Final = "job"
"""The service: ``service.name`` (``service.namespace/service.name`` when namespaced)."""
SERVICE_NAME: Final = label("service.name")
"""``service.name`` itself, as the collector's config adds it (trace searches need it)."""
SERVICE_INSTANCE_ID: Final = label("service.instance.id")
TARGET_INFO: Final = "target_info"
"""The series carrying a process's resource attributes as labels."""
INSTANCE: Final = "instance"
POOL: Final = label(semconv.ATTR_EXECUTOR_NAME)
POOL_TYPE: Final = label(semconv.ATTR_EXECUTOR_TYPE)
WORKER_STATE: Final = label(semconv.ATTR_EXECUTOR_WORKER_STATE)
WORKER_LIMIT: Final = label(semconv.ATTR_EXECUTOR_WORKER_LIMIT)
TOKEN_TYPE: Final = label(semconv.ATTR_GEN_AI_TOKEN_TYPE)
MODEL: Final = label(semconv.ATTR_GEN_AI_REQUEST_MODEL)
ROUTE: Final = label(semconv.ATTR_HTTP_ROUTE)
IO_LIBRARY: Final = label(semconv.ATTR_EXECUTOR_IO_LIBRARY)
SERVER_ADDRESS: Final = label(semconv.ATTR_SERVER_ADDRESS)
SERVER_PORT: Final = label(semconv.ATTR_SERVER_PORT)
LOOP_STATE: Final = label(semconv.ATTR_EVENTLOOP_STATE)
CPU_MODE: Final = label(semconv.ATTR_CPU_MODE)
CODE_FUNCTION: Final = label(semconv.ATTR_CODE_FUNCTION_NAME)
CODE_FILE: Final = label(semconv.ATTR_CODE_FILE_PATH)
CODE_LINE: Final = label(semconv.ATTR_CODE_LINE_NUMBER)
BLOCK_CAUSE: Final = label(semconv.ATTR_EVENTLOOP_BLOCKED_CAUSE)
SPAN_NAME: Final = "span_name"

POOL_KEY: Final = (SERVICE, INSTANCE, POOL, POOL_TYPE)
IO_TARGET_KEY: Final = (IO_LIBRARY, SERVER_ADDRESS, SERVER_PORT)
"""What identifies where a pool's blocking HTTP calls went: the library and the server."""
"""What identifies one pool: its name, in one process of one service."""
LOOP_KEY: Final = (SERVICE, INSTANCE)
"""What identifies one event loop's process."""
SITE_KEY: Final = (CODE_FUNCTION, CODE_FILE, CODE_LINE, BLOCK_CAUSE)
"""What identifies a line that blocked the event loop, and what held it there."""


def by(*labels: str) -> str:
    """A ``by (...)`` clause."""
    return f"by ({', '.join(labels)})"


def on(*labels: str) -> str:
    """An ``on (...)`` clause."""
    return f"on ({', '.join(labels)})"


def selector(metric: str, **matchers: str) -> str:
    """``metric{label="value", ...}``; a value starting with ``~`` is a regex match."""
    if not matchers:
        return metric
    parts = []
    for name, value in matchers.items():
        operator, text = ("=~", value[1:]) if value.startswith("~") else ("=", value)
        parts.append(f'{name}{operator}"{text}"')
    return f"{metric}{{{', '.join(parts)}}}"
