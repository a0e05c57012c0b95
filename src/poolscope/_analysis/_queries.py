"""The PromQL that dashboards, alerts, ``poolscope top`` and ``diagnose()`` share.

One rule, one place: the saturation the ``PoolscopePoolSaturated`` alert
fires on is the saturation :func:`poolscope.windows_from_prometheus` reads
for :func:`poolscope.diagnose`, and the dashboard's "is it CPU?" panel draws
what the ``cpu_bound`` verdict judges. Every function takes the label
matchers to apply: the dashboards pass their template variables
(``job=~"$service"``), the alert rules pass none. The ``window`` is a range
such as ``$__rate_interval`` or ``5m``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from .. import semconv
from .._thresholds import LAG_THRESHOLD_S, SATURATION
from . import _promql as p

__all__ = [
    "DASHBOARD",
    "NO_MATCHERS",
    "block_count",
    "block_seconds",
    "busy",
    "io_pinned_workers",
    "io_quantile",
    "io_seconds_by_target",
    "late_heartbeats",
    "limit",
    "llm_in_flight",
    "llm_pinned_seconds",
    "llm_pinned_workers",
    "llm_quantile",
    "llm_tokens_per_second",
    "loop_blocked",
    "loop_blocked_per_minute",
    "loop_cpu_cores",
    "loop_lag",
    "loop_utilization",
    "peak_busy",
    "peak_pending",
    "peak_tasks_per_second",
    "pending",
    "process_cpu_cores",
    "processes",
    "quantile",
    "request_latency",
    "request_rate",
    "requests_in_flight",
    "resume_delay",
    "run_quantile",
    "run_seconds",
    "saturated_processes",
    "saturation",
    "tasks",
    "tasks_per_second",
    "typical_busy",
    "typical_saturation",
    "wait_heatmap",
    "wait_quantile",
    "wait_quantile_by_route",
    "wait_seconds",
    "wait_seconds_by_route",
    "wait_share_of_request_time",
    "wait_span_quantile",
    "wait_span_seconds",
    "waiting_tasks",
    "waits_per_second_by_route",
]

Matchers = Mapping[str, str]

NO_MATCHERS: Final[Matchers] = {}
DASHBOARD: Final[Matchers] = {
    p.SERVICE: "~$service",
    p.INSTANCE: "~$instance",
    p.POOL: "~$pool",
}
"""The dashboard's template variables as label matchers (multi-value: regex)."""

POOL_BY: Final = p.by(*p.POOL_KEY)
POOL_ON: Final = p.on(*p.POOL_KEY)
LOOP_BY: Final = p.by(*p.LOOP_KEY)


def _service(m: Matchers) -> dict[str, str]:
    """The matchers that apply to series without a pool label."""
    return {k: v for k, v in m.items() if k != p.POOL}


# --- Pools -------------------------------------------------------------------


def busy(m: Matchers) -> str:
    series = p.selector(p.WORKERS, **{p.WORKER_STATE: semconv.WORKER_STATE_BUSY}, **m)
    return f"max {POOL_BY} ({series})"


def limit(m: Matchers) -> str:
    return f"max {POOL_BY} ({p.selector(p.LIMIT, **m)})"


def pending(m: Matchers) -> str:
    return f"max {POOL_BY} ({p.selector(p.PENDING, **m)})"


def saturation(m: Matchers) -> str:
    """Busy workers as a share of the pool's own limit, per process."""
    return f"{busy(m)} / {POOL_ON} {limit(m)}"


def peak_busy(m: Matchers, window: str) -> str:
    series = p.selector(p.WORKERS, **{p.WORKER_STATE: semconv.WORKER_STATE_BUSY}, **m)
    return f"max {POOL_BY} (max_over_time({series}[{window}]))"


def peak_pending(m: Matchers, window: str) -> str:
    return f"max {POOL_BY} (max_over_time({p.selector(p.PENDING, **m)}[{window}]))"


def typical_busy(m: Matchers, window: str) -> str:
    """The median over ``window`` of busy workers: busy most of the time, not once."""
    series = p.selector(p.WORKERS, **{p.WORKER_STATE: semconv.WORKER_STATE_BUSY}, **m)
    return f"max {POOL_BY} (quantile_over_time(0.5, {series}[{window}]))"


def typical_saturation(m: Matchers, window: str) -> str:
    """The median over ``window`` of busy/limit: saturated most of the time, not once."""
    return f"{typical_busy(m, window)} / {POOL_ON} {limit(m)}"


def saturated_processes(m: Matchers, window: str) -> str:
    """Per service and pool: how many processes have it saturated (the alert's rule).

    A fleet view that counts saturated processes instead of summing busy
    workers across processes against one process's limit.
    """
    saturated = (
        f"({typical_saturation(m, window)}) >= {SATURATION} "
        f"and {POOL_ON} ({peak_pending(m, window)}) > 0"
    )
    return f"count {p.by(p.SERVICE, p.POOL)} ({saturated})"


def processes(m: Matchers) -> str:
    """Per service and pool: how many processes report it."""
    return f"count {p.by(p.SERVICE, p.POOL)} ({limit(m)})"


def quantile(histogram: str, q: float, by: tuple[str, ...], m: Matchers, window: str) -> str:
    bucket = p.selector(f"{histogram}_bucket", **m)
    return f"histogram_quantile({q}, sum {p.by(*by, 'le')} (rate({bucket}[{window}])))"


def wait_quantile(q: float, m: Matchers, window: str) -> str:
    return quantile(p.WAIT, q, p.POOL_KEY, m, window)


def run_quantile(q: float, m: Matchers, window: str) -> str:
    return quantile(p.RUN, q, p.POOL_KEY, m, window)


def tasks_per_second(m: Matchers, window: str) -> str:
    return f"sum {POOL_BY} (rate({p.selector(f'{p.WAIT}_count', **m)}[{window}]))"


def peak_tasks_per_second(m: Matchers, window: str, over: str) -> str:
    """The highest ``window`` rate of tasks during ``over``: a burst of load is not averaged
    away over a long range (15.9/s under load read 1.0/s as the mean of 30 minutes)."""
    return f"max_over_time(({tasks_per_second(m, window)})[{over}:])"


def tasks(m: Matchers, window: str) -> str:
    return f"sum {POOL_BY} (increase({p.selector(f'{p.WAIT}_count', **m)}[{window}]))"


def wait_seconds(m: Matchers, window: str) -> str:
    return f"sum {POOL_BY} (increase({p.selector(f'{p.WAIT}_sum', **m)}[{window}]))"


def run_seconds(m: Matchers, window: str) -> str:
    return f"sum {POOL_BY} (increase({p.selector(f'{p.RUN}_sum', **m)}[{window}]))"


def waiting_tasks(m: Matchers, window: str) -> str:
    """Seconds waited per second: the mean number of tasks queued (Little's law)."""
    return f"sum {POOL_BY} (rate({p.selector(f'{p.WAIT}_sum', **m)}[{window}]))"


def wait_heatmap(m: Matchers, window: str) -> str:
    """Tasks per second by wait bucket (``rate``: each task lands in one cell)."""
    bucket = p.selector(f"{p.WAIT}_bucket", **m)
    return f"sum by (le) (rate({bucket}[{window}]))"


def wait_share_of_request_time(m: Matchers, window: str) -> str:
    """Seconds waited for workers per second of request time, by pool."""
    waited = f"sum {p.by(p.SERVICE, p.POOL)} (rate({p.selector(f'{p.WAIT}_sum', **m)}[{window}]))"
    served = p.selector(f"{p.HTTP_DURATION}_sum", **_service(m))
    return (
        f"{waited} / {p.on(p.SERVICE)} group_left sum {p.by(p.SERVICE)} (rate({served}[{window}]))"
    )


# --- Requests ----------------------------------------------------------------


def request_rate(m: Matchers, window: str) -> str:
    count = p.selector(f"{p.HTTP_DURATION}_count", **_service(m))
    return f"sum {p.by(p.SERVICE, p.ROUTE)} (rate({count}[{window}]))"


def request_latency(q: float, m: Matchers, window: str) -> str:
    return quantile(p.HTTP_DURATION, q, (p.SERVICE,), _service(m), window)


def requests_in_flight(m: Matchers) -> str:
    return f"sum {p.by(p.SERVICE, p.INSTANCE)} ({p.selector(p.HTTP_ACTIVE, **_service(m))})"


# --- Event loop ----------------------------------------------------------------


def loop_lag(q: float, m: Matchers, window: str) -> str:
    return quantile(p.LAG, q, p.LOOP_KEY, _service(m), window)


def resume_delay(q: float, m: Matchers, window: str) -> str:
    return quantile(p.RESUME, q, p.POOL_KEY, m, window)


def late_heartbeats(m: Matchers, window: str) -> str:
    """Share of the loop's heartbeats more than ``LAG_THRESHOLD_S`` late."""
    on_time = p.selector(f"{p.LAG}_bucket", **_service(m), le=f"{LAG_THRESHOLD_S:g}")
    every = p.selector(f"{p.LAG}_count", **_service(m))
    return (
        f"1 - sum {LOOP_BY} (rate({on_time}[{window}])) / sum {LOOP_BY} (rate({every}[{window}]))"
    )


def loop_utilization(m: Matchers, window: str) -> str:
    """Share of the time the event loop ran callbacks (Node.js's event-loop utilization)."""
    active = p.selector(
        p.LOOP_TIME, **_service(m), **{p.LOOP_STATE: semconv.EVENTLOOP_STATE_ACTIVE}
    )
    every = p.selector(p.LOOP_TIME, **_service(m))
    return f"sum {LOOP_BY} (rate({active}[{window}])) / sum {LOOP_BY} (rate({every}[{window}]))"


def loop_cpu_cores(m: Matchers, window: str) -> str:
    """Cores the event loop's thread used."""
    return f"sum {LOOP_BY} (rate({p.selector(p.LOOP_CPU, **_service(m))}[{window}]))"


def process_cpu_cores(m: Matchers, window: str) -> str:
    """Cores the process used (``process.cpu.time`` by ``cpu.mode``, every mode)."""
    # Only series with cpu_mode: opentelemetry-instrumentation-system-metrics
    # reports the same metric name by "type", which must not be added in.
    series = p.selector(p.PROCESS_CPU, **_service(m), **{p.CPU_MODE: "~.+"})
    return f"sum {LOOP_BY} (rate({series}[{window}]))"


def block_count(m: Matchers, window: str) -> str:
    """Callbacks that blocked the loop in ``window``, by the line that held it."""
    series = p.selector(f"{p.BLOCK}_count", **_service(m))
    return f"sum {p.by(*p.LOOP_KEY, *p.SITE_KEY)} (increase({series}[{window}]))"


def block_seconds(m: Matchers, window: str) -> str:
    """Seconds blocking callbacks held the loop in ``window``, by line."""
    series = p.selector(f"{p.BLOCK}_sum", **_service(m))
    return f"sum {p.by(*p.LOOP_KEY, *p.SITE_KEY)} (increase({series}[{window}]))"


_OWN_CAUSES: Final = "~" + "|".join(semconv.BLOCK_CAUSES_OWN)


def loop_blocked(m: Matchers, window: str) -> str:
    """Callbacks that blocked the loop themselves in ``window``, all lines together."""
    series = p.selector(f"{p.BLOCK}_count", **_service(m), **{p.BLOCK_CAUSE: _OWN_CAUSES})
    return f"sum {LOOP_BY} (increase({series}[{window}]))"


def loop_blocked_per_minute(m: Matchers, window: str) -> str:
    """Blocks per minute by cause (a rate: no double counting across panel points)."""
    series = p.selector(f"{p.BLOCK}_count", **_service(m))
    return f"60 * sum {p.by(*p.LOOP_KEY, p.BLOCK_CAUSE)} (rate({series}[{window}]))"


# --- Traces-only users: the span metrics of executor.wait spans ----------------------


def wait_span_seconds(m: Matchers, window: str) -> str:
    """Seconds spent in ``executor.wait`` spans per second, per pool and its limit."""
    spans = p.selector(f"{p.SPAN_DURATION}_sum", **{p.SPAN_NAME: semconv.SPAN_WAIT}, **m)
    return f"sum {p.by(*p.POOL_KEY, p.WORKER_LIMIT)} (rate({spans}[{window}]))"


ROUTE_BY: Final = (p.SERVICE, p.ROUTE, p.POOL)
"""Which route's work waited in which pool (the wait spans carry the request's route)."""


def wait_seconds_by_route(m: Matchers, window: str) -> str:
    """Seconds per second the route's tasks spent in ``executor.wait`` spans, per pool."""
    spans = p.selector(f"{p.SPAN_DURATION}_sum", **{p.SPAN_NAME: semconv.SPAN_WAIT}, **m)
    return f"sum {p.by(*ROUTE_BY)} (rate({spans}[{window}]))"


def wait_quantile_by_route(q: float, m: Matchers, window: str) -> str:
    bucket = p.selector(f"{p.SPAN_DURATION}_bucket", **{p.SPAN_NAME: semconv.SPAN_WAIT}, **m)
    return f"histogram_quantile({q}, sum {p.by(*ROUTE_BY, 'le')} (rate({bucket}[{window}])))"


def waits_per_second_by_route(m: Matchers, window: str) -> str:
    calls = p.selector(p.SPAN_CALLS, **{p.SPAN_NAME: semconv.SPAN_WAIT}, **m)
    return f"sum {p.by(*ROUTE_BY)} (rate({calls}[{window}]))"


def wait_span_quantile(q: float, m: Matchers, window: str) -> str:
    bucket = p.selector(f"{p.SPAN_DURATION}_bucket", **{p.SPAN_NAME: semconv.SPAN_WAIT}, **m)
    return f"histogram_quantile({q}, sum {p.by(*p.POOL_KEY, 'le')} (rate({bucket}[{window}])))"


# --- LLM calls -------------------------------------------------------------------


def llm_in_flight(m: Matchers, window: str) -> str:
    """Mean concurrent LLM calls: call-seconds per second (Little's law)."""
    total = p.selector(f"{p.LLM_DURATION}_sum", **_service(m))
    return f"sum {p.by(p.SERVICE, p.MODEL)} (rate({total}[{window}]))"


def llm_quantile(histogram: str, q: float, m: Matchers, window: str) -> str:
    return quantile(histogram, q, (p.SERVICE, p.MODEL), _service(m), window)


def llm_tokens_per_second(m: Matchers, window: str) -> str:
    total = p.selector(f"{p.LLM_TOKENS}_sum", **_service(m))
    return f"sum {p.by(p.SERVICE, p.TOKEN_TYPE)} (rate({total}[{window}]))"


def llm_pinned_workers(m: Matchers, window: str) -> str:
    """Workers held by sync LLM calls on average: their seconds per second, by pool."""
    return f"sum {p.by(p.SERVICE, p.INSTANCE, p.POOL)} (rate({_llm_on_pools(m)}[{window}]))"


def llm_pinned_seconds(m: Matchers, window: str) -> str:
    """Worker-seconds spent in sync LLM calls in ``window``, by pool."""
    return f"sum {p.by(p.SERVICE, p.INSTANCE, p.POOL)} (increase({_llm_on_pools(m)}[{window}]))"


def io_pinned_workers(m: Matchers, window: str) -> str:
    """Workers held by blocking HTTP calls on average: their seconds per second, by pool."""
    total = p.selector(f"{p.IO_DURATION}_sum", **m)
    return f"sum {p.by(p.SERVICE, p.INSTANCE, p.POOL)} (rate({total}[{window}]))"


def io_seconds_by_target(m: Matchers, window: str) -> str:
    """Worker-seconds blocking HTTP calls held in ``window``, by pool, library and server."""
    total = p.selector(f"{p.IO_DURATION}_sum", **m)
    by = p.by(p.SERVICE, p.INSTANCE, p.POOL, *p.IO_TARGET_KEY)
    return f"sum {by} (increase({total}[{window}]))"


def io_quantile(q: float, m: Matchers, window: str) -> str:
    """A quantile of one blocking HTTP call's duration, by pool."""
    return quantile(p.IO_DURATION, q, (p.SERVICE, p.INSTANCE, p.POOL), m, window)


def _llm_on_pools(m: Matchers) -> str:
    return p.selector(f"{p.LLM_DURATION}_sum", **{**m, p.POOL: m.get(p.POOL, "~.+")})
