"""``PoolscopeInstrumentor``: the OpenTelemetry ``BaseInstrumentor`` entry point.

Registered under the ``opentelemetry_instrumentor`` entry point, so
``opentelemetry-instrument uvicorn app:app`` turns poolscope on with no code
change. ``poolscope.instrument()`` is the same thing as a function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from . import _runtime
from ._config import ENV_SDK_DISABLED, Settings, sdk_disabled
from ._errors import ConfigurationError
from ._safety import logger

__all__ = ["PoolscopeInstrumentor"]

_SETTING_NAMES = tuple(field.name for field in dataclasses.fields(Settings))
_PROVIDER_NAMES = ("tracer_provider", "meter_provider")


class PoolscopeInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Instrument every thread pool, process pool and anyio limiter of this process.

    Keywords: ``tracer_provider`` and ``meter_provider`` (default: the global
    ones), and the settings of :class:`poolscope._config.Settings`, each of
    which falls back to its ``OTEL_POOLSCOPE_*`` environment variable.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        """None: the thread and process pool paths patch the standard library.

        ``BaseInstrumentor`` (and ``opentelemetry-instrument``) skip an
        instrumentor whole when any dependency it names is missing; poolscope's
        third-party paths are each optional, so each checks its own library
        against its range (``poolscope._runtime.SUPPORTED``) when installed, and
        one outside it is skipped with a warning.
        """
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(_SETTING_NAMES) - set(_PROVIDER_NAMES))
        if unknown:
            raise ConfigurationError(
                f"unknown keyword argument {unknown[0]!r} for poolscope instrumentation; "
                f"expected one of {sorted(_SETTING_NAMES + _PROVIDER_NAMES)}"
            )
        settings = Settings.resolve(**{k: kwargs[k] for k in _SETTING_NAMES if k in kwargs})
        tracer_provider = kwargs.get("tracer_provider")
        meter_provider = kwargs.get("meter_provider")
        if tracer_provider is not None and not hasattr(tracer_provider, "get_tracer"):
            raise ConfigurationError(
                f"tracer_provider must be an OpenTelemetry TracerProvider, got {tracer_provider!r}"
            )
        if meter_provider is not None and not hasattr(meter_provider, "get_meter"):
            raise ConfigurationError(
                f"meter_provider must be an OpenTelemetry MeterProvider, got {meter_provider!r}"
            )
        if sdk_disabled():  # checked after the arguments: a typo still fails now
            logger.info("poolscope: %s=true, so nothing is instrumented", ENV_SDK_DISABLED)
            return
        _runtime.activate(settings, tracer_provider, meter_provider)

    def _uninstrument(self, **kwargs: Any) -> None:
        _runtime.deactivate()
