"""poolscope: see every wait for a worker thread in async Python apps.

For every task handed to a pool (the event loop's default executor, anyio's
thread limiter behind every Starlette/FastAPI sync path, your own thread and
process pools, your semaphores) poolscope records the time spent **waiting for
a worker** apart from the time **running**, per pool, with the pool's cap and
how busy it is, as OpenTelemetry metrics and spans.

Turn it on::

    import poolscope
    poolscope.instrument()            # or: opentelemetry-instrument uvicorn app:app

Name the pools you create::

    pdf_pool = poolscope.instrument_executor(ThreadPoolExecutor(4), name="pdf")
    llm_slots = poolscope.instrument_semaphore(asyncio.Semaphore(16), name="llm")

Settings (keyword, else environment variable, else default):

* ``wait_span_threshold`` / ``OTEL_POOLSCOPE_WAIT_SPAN_THRESHOLD_MS``: emit an
  ``executor.wait`` span only for waits at least this long (default 1 ms).
* ``run_spans`` / ``OTEL_POOLSCOPE_RUN_SPANS``: emit ``executor.run`` spans (true).
* ``root_spans`` / ``OTEL_POOLSCOPE_ROOT_SPANS``: also trace tasks submitted
  outside any trace (false).
* ``paths`` / ``OTEL_POOLSCOPE_PATHS``: ``thread_pool``, ``process_pool``,
  ``anyio``, ``starlette``, ``openai``, ``anthropic``, ``http_clients`` (all).

Every name poolscope emits is defined in :mod:`poolscope.semconv`.
:func:`diagnose` names the pool that starved (or the blocked event loop) from
what the pools did; ``poolscope load``, ``audit``, ``diagnose``, ``top`` and
``demo`` are the command line's way in, and the pytest plugin's
``poolscope_recorder`` fixture the test suite's.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import ConfigurationError
from ._version import __version__

if TYPE_CHECKING:
    from ._analysis._diagnose import (
        BlockSite,
        Diagnosis,
        PoolWindow,
        ProcessWindow,
        Verdict,
        VerdictKind,
        diagnose,
    )
    from ._analysis._readings import windows_from_prometheus
    from ._api import (
        instrument,
        instrument_executor,
        instrument_limiter,
        instrument_semaphore,
        uninstrument,
    )
    from ._asgi._middleware import PoolscopeMiddleware
    from ._instrumentor import PoolscopeInstrumentor
    from ._llm._call import LLMCall, llm_call
    from ._paths._caps import InstrumentedCapacityLimiter, InstrumentedSemaphore
    from ._sdk._configure import configure

__all__ = [
    "BlockSite",
    "ConfigurationError",
    "Diagnosis",
    "InstrumentedCapacityLimiter",
    "InstrumentedSemaphore",
    "LLMCall",
    "PoolWindow",
    "PoolscopeInstrumentor",
    "PoolscopeMiddleware",
    "ProcessWindow",
    "Verdict",
    "VerdictKind",
    "__version__",
    "configure",
    "diagnose",
    "instrument",
    "instrument_executor",
    "instrument_limiter",
    "instrument_semaphore",
    "llm_call",
    "uninstrument",
    "windows_from_prometheus",
]

# Importing poolscope costs nothing until a name is used: the modules behind the
# names (and the OpenTelemetry SDK behind configure()) load on first access. So
# the pytest plugin, loaded into every test run where poolscope is installed,
# and opentelemetry-instrument's entry-point scan pay only for what they use.
_DEFINED_IN = {
    "BlockSite": "._analysis._diagnose",
    "Diagnosis": "._analysis._diagnose",
    "PoolWindow": "._analysis._diagnose",
    "ProcessWindow": "._analysis._diagnose",
    "Verdict": "._analysis._diagnose",
    "VerdictKind": "._analysis._diagnose",
    "diagnose": "._analysis._diagnose",
    "windows_from_prometheus": "._analysis._readings",
    "instrument": "._api",
    "instrument_executor": "._api",
    "instrument_limiter": "._api",
    "instrument_semaphore": "._api",
    "uninstrument": "._api",
    "PoolscopeMiddleware": "._asgi._middleware",
    "PoolscopeInstrumentor": "._instrumentor",
    "LLMCall": "._llm._call",
    "llm_call": "._llm._call",
    "InstrumentedCapacityLimiter": "._paths._caps",
    "InstrumentedSemaphore": "._paths._caps",
    "configure": "._sdk._configure",
}


def _public(value: Any) -> Any:
    """Public objects show as ``poolscope.X`` (in reprs, docs and tracebacks), not as the
    private module that defines them, as httpx's and anyio's do."""
    value.__module__ = __name__
    return value


def __getattr__(name: str) -> Any:
    module = _DEFINED_IN.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = _public(getattr(importlib.import_module(module, __name__), name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


_public(ConfigurationError)
