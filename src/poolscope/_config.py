"""Settings: keyword, then ``OTEL_POOLSCOPE_*`` environment variable, then default.

Everything is validated when instrumentation is set up, so a typo fails at
start-up with a message naming the setting, never inside a request.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from ._errors import ConfigurationError

__all__ = [
    "ENV_PATHS",
    "ENV_ROOT_SPANS",
    "ENV_RUN_SPANS",
    "ENV_WAIT_SPAN_THRESHOLD_MS",
    "PATHS",
    "Settings",
]

ENV_WAIT_SPAN_THRESHOLD_MS: Final = "OTEL_POOLSCOPE_WAIT_SPAN_THRESHOLD_MS"
ENV_RUN_SPANS: Final = "OTEL_POOLSCOPE_RUN_SPANS"
ENV_ROOT_SPANS: Final = "OTEL_POOLSCOPE_ROOT_SPANS"
ENV_PATHS: Final = "OTEL_POOLSCOPE_PATHS"

PATH_THREAD_POOL: Final = "thread_pool"
PATH_PROCESS_POOL: Final = "process_pool"
PATH_ANYIO: Final = "anyio"
PATHS: Final[tuple[str, ...]] = (PATH_THREAD_POOL, PATH_PROCESS_POOL, PATH_ANYIO)
"""Offload paths poolscope can patch; all are on by default."""

_DEFAULT_WAIT_SPAN_THRESHOLD: Final = 0.001


class _NotGiven:
    """Tells "keyword not passed" apart from an explicit ``None``."""

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = _NotGiven()


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated instrumentation settings.

    ``wait_span_threshold``: seconds; an ``executor.wait`` span is emitted only
    for waits at least this long (0 emits every wait).
    ``run_spans``: emit an ``executor.run`` span for every traced task.
    ``root_spans``: also emit spans for tasks submitted outside any trace.
    ``paths``: which offload paths to patch (see :data:`PATHS`).
    """

    wait_span_threshold: float = _DEFAULT_WAIT_SPAN_THRESHOLD
    run_spans: bool = True
    root_spans: bool = False
    paths: frozenset[str] = frozenset(PATHS)

    @classmethod
    def resolve(
        cls,
        *,
        wait_span_threshold: object = NOT_GIVEN,
        run_spans: object = NOT_GIVEN,
        root_spans: object = NOT_GIVEN,
        paths: object = NOT_GIVEN,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            wait_span_threshold=_resolve_seconds(
                "wait_span_threshold",
                wait_span_threshold,
                ENV_WAIT_SPAN_THRESHOLD_MS,
                env,
                _DEFAULT_WAIT_SPAN_THRESHOLD,
            ),
            run_spans=_resolve_bool("run_spans", run_spans, ENV_RUN_SPANS, env, True),
            root_spans=_resolve_bool("root_spans", root_spans, ENV_ROOT_SPANS, env, False),
            paths=_resolve_paths(paths, env),
        )


def _resolve_seconds(
    name: str, value: object, env_name: str, env: Mapping[str, str], default: float
) -> float:
    if value is NOT_GIVEN:
        raw = env.get(env_name, "").strip()
        if not raw:
            return default
        try:
            millis = float(raw)
        except ValueError:
            raise ConfigurationError(
                f"{env_name} must be a number of milliseconds >= 0, got {raw!r}"
            ) from None
        if not math.isfinite(millis) or millis < 0:
            raise ConfigurationError(
                f"{env_name} must be a number of milliseconds >= 0, got {raw!r}"
            )
        return millis / 1000.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(
            f"{name} must be a number of seconds >= 0, got {value!r} ({type(value).__name__})"
        )
    if not math.isfinite(value) or value < 0:
        raise ConfigurationError(f"{name} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _resolve_bool(
    name: str, value: object, env_name: str, env: Mapping[str, str], default: bool
) -> bool:
    if value is NOT_GIVEN:
        raw = env.get(env_name, "").strip()
        if not raw:
            return default
        lowered = raw.lower()
        if lowered not in ("true", "false"):
            raise ConfigurationError(f"{env_name} must be 'true' or 'false', got {raw!r}")
        return lowered == "true"
    if not isinstance(value, bool):
        raise ConfigurationError(
            f"{name} must be True or False, got {value!r} ({type(value).__name__})"
        )
    return value


def _resolve_paths(value: object, env: Mapping[str, str]) -> frozenset[str]:
    if value is NOT_GIVEN:
        raw = env.get(ENV_PATHS)
        if raw is None or not raw.strip():
            return frozenset(PATHS)
        names: Iterable[object] = [part.strip() for part in raw.split(",") if part.strip()]
        source = ENV_PATHS
    elif isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigurationError(
            f"paths must be a collection of path names from {list(PATHS)}, got {value!r}"
        )
    else:
        names = value
        source = "paths"
    chosen = set()
    for item in names:
        if item not in PATHS:
            raise ConfigurationError(
                f"{source}: expected each path to be one of {list(PATHS)}, got {item!r}"
            )
        chosen.add(str(item))
    return frozenset(chosen)
