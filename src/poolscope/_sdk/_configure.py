"""``poolscope.configure()``: the one call that sets everything up for an app.

It builds an OpenTelemetry SDK tracer and meter provider with OTLP export
(gRPC or HTTP), histogram views with second-scale buckets, optionally a
Prometheus scrape endpoint, then turns on the executor instrumentation, the
event-loop monitor, and (given an ``app``) the ASGI middleware.

Providers the application set itself are kept: poolscope then only adds its
instrumentation on top of them. Every value is validated here, so a typo in an
endpoint fails at start-up. Export runs in background threads with bounded
queues; a collector that is down never slows a request.

Standard variables honoured: ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_PROTOCOL``,
``OTEL_EXPORTER_OTLP_HEADERS`` (and the other ``OTEL_EXPORTER_OTLP_*`` the
exporters read), ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER``
(``otlp``, ``console`` or ``none``), ``OTEL_METRIC_EXPORT_INTERVAL``,
``OTEL_METRICS_EXEMPLAR_FILTER``, and
``OTEL_SDK_DISABLED``: ``true`` and configure() sets up nothing (after checking
its arguments) and returns the app as given.
"""

from __future__ import annotations

import importlib
import os
import threading
import uuid
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from opentelemetry import metrics, trace
from opentelemetry.metrics._internal import _ProxyMeterProvider

from .. import semconv
from .._api import instrument
from .._asgi._middleware import PoolscopeMiddleware
from .._config import ENV_SDK_DISABLED, sdk_disabled
from .._errors import ConfigurationError
from .._safety import logger

__all__ = [
    "DEFAULT_METRIC_INTERVAL_MS",
    "ENV_PROMETHEUS_PORT",
    "check_url",
    "configure",
]

PROTOCOLS: Final = ("grpc", "http/protobuf")
EXPORTERS: Final = ("otlp", "console", "none")
ENV_EXEMPLAR_FILTER: Final = "OTEL_METRICS_EXEMPLAR_FILTER"
EXEMPLAR_FILTERS: Final = {
    "trace_based": "TraceBasedExemplarFilter",
    "always_on": "AlwaysOnExemplarFilter",
    "always_off": "AlwaysOffExemplarFilter",
}
"""``OTEL_METRICS_EXEMPLAR_FILTER``'s values, and their classes in ``opentelemetry.sdk.metrics``."""
ENV_PROMETHEUS_PORT: Final = "OTEL_POOLSCOPE_PROMETHEUS_PORT"
ENV_PROMETHEUS_HOST: Final = "OTEL_POOLSCOPE_PROMETHEUS_HOST"
DEFAULT_METRIC_INTERVAL_MS: Final = 15_000
"""Unless ``OTEL_METRIC_EXPORT_INTERVAL`` says otherwise (the SDK's default is 60 s):
the dashboards' one-minute rates need a few points per minute."""
_CONFIGURED_MARK: Final = "_poolscope_configured"

_lock = threading.Lock()
_ours: dict[str, Any] = {}  # providers this module created and set


def configure(
    app: Any = None,
    *,
    service_name: str | None = None,
    otlp_endpoint: str | None = None,
    otlp_protocol: str | None = None,
    prometheus_port: int | None = None,
    prometheus_host: str | None = None,
    **settings: Any,
) -> Any:
    """Set up OpenTelemetry export and poolscope in one call; return the app.

    ``app``: a Starlette/FastAPI app gets ``PoolscopeMiddleware`` added; any
    other ASGI callable is returned wrapped in it. ``service_name`` falls back
    to ``OTEL_SERVICE_NAME``. ``otlp_endpoint`` / ``otlp_protocol`` fall back
    to the ``OTEL_EXPORTER_OTLP_*`` variables (protocol ``grpc`` or
    ``http/protobuf``). ``prometheus_port`` (or ``OTEL_POOLSCOPE_PROMETHEUS_PORT``)
    serves the metrics for scraping on ``prometheus_host`` (default 127.0.0.1).
    Other keywords are poolscope settings, as for :func:`poolscope.instrument`.
    """
    env = os.environ
    plan = _Plan.resolve(
        env,
        service_name=service_name,
        otlp_endpoint=otlp_endpoint,
        otlp_protocol=otlp_protocol,
        prometheus_port=prometheus_port,
        prometheus_host=prometheus_host,
    )
    if sdk_disabled(env):
        logger.info("poolscope: %s=true, so configure() sets up nothing", ENV_SDK_DISABLED)
        return app
    with _lock:
        meter_provider = _meter_provider(plan)
        tracer_provider = _tracer_provider(plan, meter_provider)
        if _ours:  # exporters made here, which must not hold up the exit (see _export)
            from ._export import register_exit_hook

            register_exit_hook()
    instrument(tracer_provider=tracer_provider, meter_provider=meter_provider, **settings)
    if app is None:
        return None
    return _add_middleware(app, tracer_provider, meter_provider)


class _Plan:
    """Validated export settings."""

    def __init__(self, **values: Any) -> None:
        self.service_name: str | None = values["service_name"]
        self.endpoint: str | None = values["endpoint"]
        self.protocol: str = values["protocol"]
        self.traces_exporter: str = values["traces_exporter"]
        self.metrics_exporter: str = values["metrics_exporter"]
        self.prometheus_port: int | None = values["prometheus_port"]
        self.prometheus_host: str = values["prometheus_host"]
        self.metric_interval_ms: int = values["metric_interval_ms"]
        self.exemplar_filter: str = values["exemplar_filter"]
        self._resource: Any = None

    def resource(self) -> Any:
        """One resource for both providers: one identity for the process's traces and metrics."""
        if self._resource is None:
            self._resource = _resource(self)
        return self._resource

    @classmethod
    def resolve(cls, env: Mapping[str, str], **given: Any) -> _Plan:
        service_name = given["service_name"]
        if service_name is not None and (
            not isinstance(service_name, str) or not service_name.strip()
        ):
            raise ConfigurationError(
                f"service_name must be a non-empty string, got {service_name!r}"
            )
        protocol = given["otlp_protocol"]
        source = "otlp_protocol"
        if protocol is None:
            protocol, source = (
                env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc").strip(),
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            )
        if protocol not in PROTOCOLS:
            raise ConfigurationError(
                f"{source}: expected one of {list(PROTOCOLS)}, got {protocol!r}"
            )
        endpoint = given["otlp_endpoint"]
        if endpoint is not None:
            check_url("otlp_endpoint", endpoint)
        elif env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
            check_url("OTEL_EXPORTER_OTLP_ENDPOINT", env["OTEL_EXPORTER_OTLP_ENDPOINT"].strip())
        exporters = {}
        for signal in ("traces", "metrics"):
            variable = f"OTEL_{signal.upper()}_EXPORTER"
            value = env.get(variable, "otlp").strip().lower() or "otlp"
            if value not in EXPORTERS:
                raise ConfigurationError(
                    f"{variable}: poolscope.configure() supports {list(EXPORTERS)}, got {value!r}"
                )
            exporters[signal] = value
        port, host = _prometheus_address(env, given["prometheus_port"], given["prometheus_host"])
        interval = env.get("OTEL_METRIC_EXPORT_INTERVAL", "").strip()
        if interval and (not (interval.isascii() and interval.isdigit()) or int(interval) == 0):
            raise ConfigurationError(
                "OTEL_METRIC_EXPORT_INTERVAL must be a positive number of milliseconds, "
                f"got {interval!r}"
            )
        exemplar_filter = env.get(ENV_EXEMPLAR_FILTER, "").strip().lower() or "trace_based"
        if exemplar_filter not in EXEMPLAR_FILTERS:
            raise ConfigurationError(
                f"{ENV_EXEMPLAR_FILTER}: expected one of {list(EXEMPLAR_FILTERS)}, "
                f"got {env[ENV_EXEMPLAR_FILTER]!r}"
            )
        if exporters["traces"] != "none":
            _check_batch_settings(env)
        return cls(
            service_name=service_name,
            endpoint=endpoint,
            protocol=protocol,
            traces_exporter=exporters["traces"],
            metrics_exporter=exporters["metrics"],
            prometheus_port=port,
            prometheus_host=host,
            metric_interval_ms=int(interval) if interval else DEFAULT_METRIC_INTERVAL_MS,
            exemplar_filter=exemplar_filter,
        )


_BSP_QUEUE: Final = ("OTEL_BSP_MAX_QUEUE_SIZE", 2048)
_BSP_BATCH: Final = ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)
_MAX_SPAN_QUEUE: Final = 10_000_000  # spans of ~2 KB: 20 GB; beyond, a typo (or an overflow)


def _check_batch_settings(env: Mapping[str, str]) -> None:
    """The span queue variables the SDK reads, checked as it would check them later,
    where it raises a bare ``ValueError`` with the meter provider already set up.
    (It ignores, with a warning, values that are not integers.)"""
    sizes = {}
    for variable, default in (_BSP_QUEUE, _BSP_BATCH):
        raw = env.get(variable, "").strip()
        try:
            sizes[variable] = int(raw) if raw else default
        except ValueError:
            sizes[variable] = default
        if not 0 < sizes[variable] <= _MAX_SPAN_QUEUE:
            raise ConfigurationError(
                f"{variable} must be a positive integer up to {_MAX_SPAN_QUEUE:_}, got {raw!r}"
            )
    queue, batch = sizes[_BSP_QUEUE[0]], sizes[_BSP_BATCH[0]]
    if batch > queue:
        raise ConfigurationError(
            f"{_BSP_BATCH[0]} ({batch}) must not exceed {_BSP_QUEUE[0]} ({queue})"
        )


def _prometheus_address(
    env: Mapping[str, str], given_port: object, given_host: object
) -> tuple[int | None, str]:
    """The Prometheus endpoint's port (None: no endpoint) and host, validated."""
    port = given_port
    if port is None and env.get(ENV_PROMETHEUS_PORT, "").strip():
        raw = env[ENV_PROMETHEUS_PORT].strip()
        if not (raw.isascii() and raw.isdigit()):
            raise ConfigurationError(f"{ENV_PROMETHEUS_PORT} must be a port number, got {raw!r}")
        port = int(raw)
        port_source = ENV_PROMETHEUS_PORT
    else:
        port_source = "prometheus_port"
    if port is not None and (
        isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535
    ):
        raise ConfigurationError(
            f"{port_source} must be a port number from 0 to 65535, got {port!r}"
        )
    if given_host is not None and (not isinstance(given_host, str) or not given_host.strip()):
        raise ConfigurationError(
            f"prometheus_host must be a host name or address such as 127.0.0.1, got {given_host!r}"
        )
    host = given_host or env.get(ENV_PROMETHEUS_HOST, "").strip() or "127.0.0.1"
    return port, host


def check_url(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise ConfigurationError(
            f"{name} must be a URL such as http://127.0.0.1:4317, got {value!r}"
        )
    parts = urlsplit(value)
    try:
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ConfigurationError(
            f"{name} must be an http:// or https:// URL with a host, such as "
            f"http://127.0.0.1:4317, got {value!r}"
        )


def _sdk() -> Any:
    try:
        from opentelemetry import sdk
    except ImportError:
        raise ConfigurationError(
            "poolscope.configure() needs the OpenTelemetry SDK and OTLP exporters: "
            "pip install 'poolscope[otlp]'"
        ) from None
    return sdk


def _resource(plan: _Plan) -> Any:
    from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource

    # Resource.create reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME.
    attributes = {SERVICE_NAME: plan.service_name} if plan.service_name else {}
    resource = Resource.create(attributes)
    identity = _process_identity()
    if SERVICE_INSTANCE_ID in resource.attributes:
        del identity[SERVICE_INSTANCE_ID]  # the one the application chose
    return resource.merge(Resource(identity))


def _process_identity() -> dict[str, Any]:
    """What tells this process apart: its own ``service.instance.id``, its pid.

    Every process exports under its own identity, so the collector keeps one
    series per process and a pool's saturation stays per process.
    """
    from opentelemetry.sdk.resources import PROCESS_PID, SERVICE_INSTANCE_ID

    return {SERVICE_INSTANCE_ID: str(uuid.uuid4()), PROCESS_PID: os.getpid()}


def _renew_after_fork() -> None:
    """A forked worker (gunicorn --preload, multiprocessing) is a new process.

    The providers configure() made were copied from the parent with its
    identity and its measurements. Give them the child's identity, or every
    worker would export under the parent's ``service.instance.id`` and their
    series would overwrite each other (recent SDKs renew the instance id at
    fork too; the pid is ours). And start the child's metrics from zero: the
    SDK restarts its export thread in the child, which would otherwise export
    the parent's cumulative counts again under the child's identity, so every
    forked process-pool worker added the parent's tasks to the fleet's sums.
    """
    try:
        from opentelemetry.sdk.resources import Resource

        identity = Resource(_process_identity())
        for provider in (_ours.get("tracer_provider"), _ours.get("meter_provider")):
            update = getattr(provider, "_update_resource", None)
            if update is not None:
                update(identity)
    except Exception:
        logger.warning("poolscope: could not renew the process identity after fork", exc_info=True)
    if _ours.get("meter_provider") is not None:
        _forget_parent_measurements(_ours["meter_provider"])


def _forget_parent_measurements(provider: Any) -> None:
    """Empty the SDK's per-reader metric storage (private, hence the care): each
    instrument's aggregations are made again, from zero, on their next measurement."""
    try:
        consumer = provider._measurement_consumer
        consumer._lock = threading.Lock()  # another thread may have held it at the fork
        for storage in consumer._reader_storages.values():
            storage._lock = threading.RLock()
            storage._instrument_view_instrument_matches = {}
    except Exception:
        logger.warning(
            "poolscope: could not reset the metrics copied from the parent process; this "
            "forked process exports the parent's counts again under its own identity",
            exc_info=True,
        )


os.register_at_fork(after_in_child=_renew_after_fork)


def _tracer_provider(plan: _Plan, meter_provider: Any) -> Any:
    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider):
        if current is not _ours.get("tracer_provider"):
            logger.info("poolscope: keeping the tracer provider the application set")
        return current
    _sdk()
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=plan.resource())
    # A bounded queue, exported from a background thread. Spans dropped when it
    # is full are logged by the SDK, and counted in otel.sdk.processor.span.processed
    # (error.type=queue_full) when OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED=true.
    if plan.traces_exporter == "otlp":
        exporter = _otlp_exporter("trace", plan)
    elif plan.traces_exporter == "console":
        exporter = ConsoleSpanExporter()
    else:
        exporter = None
    if exporter is not None:
        try:
            processor = BatchSpanProcessor(exporter, meter_provider=meter_provider)
        except TypeError:  # an SDK from before processor metrics: drops are only logged
            processor = BatchSpanProcessor(exporter)
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    _ours["tracer_provider"] = provider
    return provider


def _meter_provider(plan: _Plan) -> Any:
    current = metrics.get_meter_provider()
    if not isinstance(current, _ProxyMeterProvider):
        if current is not _ours.get("meter_provider"):
            logger.info("poolscope: keeping the meter provider the application set")
        return current
    _sdk()
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

    from . import _readers

    readers: list[Any] = []
    if plan.metrics_exporter != "none":
        exporter = (
            _otlp_exporter("metric", plan)
            if plan.metrics_exporter == "otlp"
            else ConsoleMetricExporter()
        )
        readers.append(_readers.periodic_reader(exporter, plan.metric_interval_ms))
    if plan.prometheus_port is not None:
        readers.append(_prometheus_reader(plan))
    provider = _readers.meter_provider(
        readers,
        _exemplar_filter(plan.exemplar_filter),
        resource=plan.resource(),
        views=_views(),
    )
    metrics.set_meter_provider(provider)
    _ours["meter_provider"] = provider
    return provider


def _exemplar_filter(name: str) -> Any:
    """One filter for the SDK's instruments and poolscope's own histograms."""
    from opentelemetry.sdk import metrics as sdk_metrics

    return getattr(sdk_metrics, EXEMPLAR_FILTERS[name])()


def _views() -> list[Any]:
    """Bucket layouts of the histograms read as quantiles (and those read against thresholds).

    OpenTelemetry's ASGI middleware advises the conventions' coarse request
    buckets (1 s, 2.5 s, 5 s, ...): with its provider made here, requests get
    the same layout as waits, so their quantiles hold within 10% too.
    """
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

    layouts = {
        semconv.DURATION_BUCKETS: (
            semconv.METRIC_TASK_WAIT_DURATION,
            semconv.METRIC_TASK_RUN_DURATION,
            semconv.METRIC_EXECUTOR_IO_DURATION,
            semconv.METRIC_HTTP_SERVER_REQUEST_DURATION,
        ),
        semconv.LAG_BUCKETS: (
            semconv.METRIC_TASK_RESUME_DURATION,
            semconv.METRIC_EVENTLOOP_LAG,
            semconv.METRIC_EVENTLOOP_BLOCK_DURATION,
        ),
    }
    return [
        View(instrument_name=name, aggregation=ExplicitBucketHistogramAggregation(list(bounds)))
        for bounds, names in layouts.items()
        for name in names
    ]


_OTLP_EXPORTERS: Final = {
    ("grpc", "trace"): (
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        "OTLPSpanExporter",
    ),
    ("grpc", "metric"): (
        "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
        "OTLPMetricExporter",
    ),
    ("http/protobuf", "trace"): (
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "OTLPSpanExporter",
    ),
    ("http/protobuf", "metric"): (
        "opentelemetry.exporter.otlp.proto.http.metric_exporter",
        "OTLPMetricExporter",
    ),
}
_OTLP_HTTP_PATHS: Final = {"trace": "/v1/traces", "metric": "/v1/metrics"}


def _otlp_exporter(signal: str, plan: _Plan) -> Any:
    module_name, class_name = _OTLP_EXPORTERS[(plan.protocol, signal)]
    try:
        exporter_class = getattr(importlib.import_module(module_name), class_name)
    except ImportError:
        raise ConfigurationError(
            f"OTLP over {plan.protocol} needs its exporter: pip install 'poolscope[otlp]'"
        ) from None
    if not plan.endpoint:
        exporter = exporter_class()  # the exporter reads OTEL_EXPORTER_OTLP_* itself
    else:
        endpoint = plan.endpoint
        if plan.protocol == "http/protobuf":
            endpoint = endpoint.rstrip("/") + _OTLP_HTTP_PATHS[signal]
        exporter = exporter_class(endpoint=endpoint)
    from ._export import reporting

    where = getattr(exporter, "_endpoint", None) or plan.endpoint or "the OTLP endpoint"
    return reporting(signal, exporter, str(where))


def _prometheus_reader(plan: _Plan) -> Any:
    try:
        import opentelemetry.exporter.prometheus  # noqa: F401
        from prometheus_client import start_http_server
    except ImportError:
        raise ConfigurationError(
            "prometheus_port needs the Prometheus exporter: pip install 'poolscope[prometheus]'"
        ) from None
    from ._readers import prometheus_reader

    reader = prometheus_reader()
    try:
        start_http_server(plan.prometheus_port or 0, addr=plan.prometheus_host)
    except OSError as error:
        raise ConfigurationError(
            "cannot serve Prometheus metrics on "
            f"{plan.prometheus_host}:{plan.prometheus_port}: {error}"
        ) from None
    return reader


def _add_middleware(app: Any, tracer_provider: Any, meter_provider: Any) -> Any:
    if getattr(app, _CONFIGURED_MARK, False):
        return app
    if hasattr(app, "add_middleware") and hasattr(app, "user_middleware"):
        app.add_middleware(
            PoolscopeMiddleware, tracer_provider=tracer_provider, meter_provider=meter_provider
        )
        setattr(app, _CONFIGURED_MARK, True)
        return app
    if not callable(app):
        raise ConfigurationError(f"app must be an ASGI application, got {type(app).__qualname__}")
    wrapped = PoolscopeMiddleware(
        app, tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    setattr(wrapped, _CONFIGURED_MARK, True)
    return wrapped
