"""The OpenTelemetry side: tracer, instruments, and the clock conversions.

Providers are passed in or taken from the global API (which may be a proxy
until the application sets its own); poolscope never sets a global provider.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Iterable
from typing import Any, Final

from opentelemetry import context, metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Observation

from .. import semconv
from .._config import Settings
from .._version import __version__
from ._cpu import process_cpu
from ._histograms import HistogramSet, for_provider
from ._loop_clock import totals as loop_totals
from ._pools import snapshot_all
from ._recorder import Recordable, drain

__all__ = ["SCOPE", "Instruments", "Telemetry", "context_inside", "exported_by"]

SCOPE: Final = "poolscope"
"""The instrumentation scope of every span and instrument poolscope makes."""


def exported_by(span: trace.Span, provider: trace.TracerProvider | None) -> bool:
    """Whether ``span`` was made by ``provider`` (None: the global provider): poolscope
    changes only what goes into its own pipeline, never another provider's spans.
    An SDK span carries its provider's resource, the same object for every span of
    one provider."""
    if provider is None:
        provider = trace.get_tracer_provider()
    resource = getattr(provider, "resource", None)
    return resource is not None and getattr(span, "resource", None) is resource


def context_inside(span: trace.Span, parent: Context | None) -> Context:
    """The context for the work ``span`` times: with ``span`` current, if it goes
    where its parent goes.

    An app may give its framework a tracer provider of its own (FastAPI's
    ``telemetry={"tracer_provider": ...}``) while poolscope records into another.
    The app's spans inside the work must then keep the app's parent: a parent
    from a provider that never exports it would leave their trace broken. An SDK
    span carries its provider's resource, the same object for every span of one
    provider; spans without one (remote, sampled out, no SDK) are no pipeline.
    """
    theirs = getattr(trace.get_current_span(parent), "resource", None)
    if theirs is None or theirs is getattr(span, "resource", None):
        return trace.set_span_in_context(span, parent)
    return parent if parent is not None else context.get_current()


class Instruments:
    """The instruments of one meter provider (created once, reused across cycles).

    The duration histograms are poolscope's own where the provider has a
    :class:`~._histograms.HistogramSet` (the providers ``configure()`` makes),
    the SDK's otherwise; the GenAI histograms are always the SDK's.
    """

    def __init__(self, meter: metrics.Meter, histograms: HistogramSet | None = None) -> None:
        def histogram(name: str, description: str, bounds: tuple[float, ...]) -> Recordable:
            if histograms is not None:
                return histograms.histogram(
                    name, unit=semconv.UNIT_SECONDS, description=description, bounds=bounds
                )
            return meter.create_histogram(
                name,
                unit=semconv.UNIT_SECONDS,
                description=description,
                explicit_bucket_boundaries_advisory=list(bounds),
            )

        buckets = semconv.DURATION_BUCKETS
        self.wait = histogram(
            semconv.METRIC_TASK_WAIT_DURATION,
            "Time a task waited for a worker, from submit to start.",
            buckets,
        )
        self.run = histogram(
            semconv.METRIC_TASK_RUN_DURATION,
            "Time a task ran on a worker, from start to end.",
            buckets,
        )
        self.io = histogram(
            semconv.METRIC_EXECUTOR_IO_DURATION,
            "Blocking HTTP calls made on a pool's worker.",
            buckets,
        )
        loop_buckets = semconv.LAG_BUCKETS
        self.resume = histogram(
            semconv.METRIC_TASK_RESUME_DURATION,
            "Time from a task's end until the awaiting coroutine ran again.",
            loop_buckets,
        )
        self.lag = histogram(
            semconv.METRIC_EVENTLOOP_LAG,
            "How late the event loop ran a callback scheduled for a given time.",
            loop_buckets,
        )
        self.block = histogram(
            semconv.METRIC_EVENTLOOP_BLOCK_DURATION,
            "Callbacks that held the event loop past the block threshold, by line.",
            loop_buckets,
        )
        meter.create_observable_counter(
            semconv.METRIC_EVENTLOOP_TIME,
            callbacks=[_observe_loop_time],
            unit=semconv.UNIT_SECONDS,
            description="Time the event loop spent running callbacks (active) or waiting (idle).",
        )
        meter.create_observable_counter(
            semconv.METRIC_EVENTLOOP_CPU_TIME,
            callbacks=[_observe_loop_cpu],
            unit=semconv.UNIT_SECONDS,
            description="CPU time the event loop's thread used.",
        )
        meter.create_observable_counter(
            semconv.METRIC_PROCESS_CPU_TIME,
            callbacks=[_observe_process_cpu],
            unit=semconv.UNIT_SECONDS,
            description="Total CPU seconds broken down by cpu.mode.",
        )
        # GenAI client instruments, for poolscope.llm_call and the openai path.
        self.gen_ai_duration = meter.create_histogram(
            semconv.METRIC_GEN_AI_OPERATION_DURATION,
            unit=semconv.UNIT_SECONDS,
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=list(semconv.GEN_AI_DURATION_BUCKETS),
        )
        self.gen_ai_tokens = meter.create_histogram(
            semconv.METRIC_GEN_AI_TOKEN_USAGE,
            unit=semconv.UNIT_TOKEN,
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=list(semconv.GEN_AI_TOKEN_BUCKETS),
        )
        self.gen_ai_first_chunk = meter.create_histogram(
            semconv.METRIC_GEN_AI_TIME_TO_FIRST_CHUNK,
            unit=semconv.UNIT_SECONDS,
            description="Time until the first chunk of a streamed response arrived.",
            explicit_bucket_boundaries_advisory=list(semconv.GEN_AI_DURATION_BUCKETS),
        )
        meter.create_observable_up_down_counter(
            semconv.METRIC_WORKER_COUNT,
            callbacks=[_observe_workers],
            unit=semconv.UNIT_WORKER,
            description="Workers by state: busy running a task, or idle (free seats).",
        )
        meter.create_observable_up_down_counter(
            semconv.METRIC_WORKER_LIMIT,
            callbacks=[_observe_limit],
            unit=semconv.UNIT_WORKER,
            description="The pool's cap: max workers, total tokens or semaphore value.",
        )
        meter.create_observable_up_down_counter(
            semconv.METRIC_TASK_PENDING,
            callbacks=[_observe_pending],
            unit=semconv.UNIT_TASK,
            description="Tasks waiting for a worker right now.",
        )


def _observe_workers(options: CallbackOptions) -> Iterable[Observation]:
    # Collections call this first: replay queued histogram records now, so the
    # histograms collected next include every task that has finished.
    drain()
    for pool in snapshot_all():
        busy_attributes: dict[str, Any] = {
            **pool.attributes,
            semconv.ATTR_EXECUTOR_WORKER_STATE: semconv.WORKER_STATE_BUSY,
        }
        idle_attributes: dict[str, Any] = {
            **pool.attributes,
            semconv.ATTR_EXECUTOR_WORKER_STATE: semconv.WORKER_STATE_IDLE,
        }
        yield Observation(pool.busy, busy_attributes)
        if math.isfinite(pool.limit):  # an unbounded limiter has no idle count
            yield Observation(max(pool.limit - pool.busy, 0), idle_attributes)


_LOOP_ACTIVE: Final = {semconv.ATTR_EVENTLOOP_STATE: semconv.EVENTLOOP_STATE_ACTIVE}
_LOOP_IDLE: Final = {semconv.ATTR_EVENTLOOP_STATE: semconv.EVENTLOOP_STATE_IDLE}
_CPU_USER: Final = {semconv.ATTR_CPU_MODE: semconv.CPU_MODE_USER}
_CPU_SYSTEM: Final = {semconv.ATTR_CPU_MODE: semconv.CPU_MODE_SYSTEM}


def _observe_loop_time(options: CallbackOptions) -> Iterable[Observation]:
    found = loop_totals()
    if found is not None:  # no loop monitored yet: no series
        active, idle, _ = found
        yield Observation(active, dict(_LOOP_ACTIVE))
        yield Observation(idle, dict(_LOOP_IDLE))


def _observe_loop_cpu(options: CallbackOptions) -> Iterable[Observation]:
    found = loop_totals()
    if found is not None:
        yield Observation(found[2], {})


def _observe_process_cpu(options: CallbackOptions) -> Iterable[Observation]:
    # Context for the pools' and the loop's figures: a process with neither (a
    # gunicorn master, a script that only imported the app) has nothing to judge.
    if loop_totals() is None and not snapshot_all():
        return
    user, system = process_cpu()
    yield Observation(user, dict(_CPU_USER))
    yield Observation(system, dict(_CPU_SYSTEM))


def _observe_limit(options: CallbackOptions) -> Iterable[Observation]:
    # An unbounded anyio limiter (total_tokens = inf) has no limit to report:
    # the SDK refuses non-finite values, with a warning at every collection.
    for pool in snapshot_all():
        if math.isfinite(pool.limit):
            yield Observation(pool.limit, dict(pool.attributes))


def _observe_pending(options: CallbackOptions) -> Iterable[Observation]:
    for pool in snapshot_all():
        yield Observation(pool.pending, dict(pool.attributes))


_instruments_by_provider: weakref.WeakKeyDictionary[object, Instruments] = (
    weakref.WeakKeyDictionary()
)
_instruments_lock = threading.Lock()


def _instruments_for(meter_provider: metrics.MeterProvider | None) -> Instruments:
    # Observable instruments cannot be unregistered; creating them once per
    # provider keeps instrument/uninstrument cycles from stacking callbacks.
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    with _instruments_lock:
        found = _instruments_by_provider.get(provider)
        if found is None:
            meter = metrics.get_meter(SCOPE, __version__, provider)
            found = _instruments_by_provider[provider] = Instruments(meter, for_provider(provider))
        return found


class Telemetry:
    """Everything a task needs to record itself, bound at instrument time."""

    __slots__ = (
        "block",
        "histograms",
        "lag",
        "resume",
        "root_spans",
        "run",
        "run_spans",
        "settings",
        "tracer",
        "tracer_provider",
        "wait",
        "wait_threshold_ns",
    )

    def __init__(
        self,
        settings: Settings,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.settings = settings
        self.wait_threshold_ns = int(settings.wait_span_threshold * 1e9)
        self.run_spans = settings.run_spans
        self.root_spans = settings.root_spans
        self.tracer_provider = tracer_provider
        """None: the global one, whichever it is when asked."""
        self.tracer = trace.get_tracer(SCOPE, __version__, tracer_provider)
        histograms = self.histograms = _instruments_for(meter_provider)
        self.wait = histograms.wait
        self.run = histograms.run
        self.resume = histograms.resume
        self.lag = histograms.lag
        self.block = histograms.block
