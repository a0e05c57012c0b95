"""Settings: keyword, then ``OTEL_POOLSCOPE_*`` environment variable, then default.

Everything is validated when instrumentation is set up, so a typo fails at
start-up with a message naming the setting, never inside a request.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ._errors import ConfigurationError

__all__ = [
    "DEFAULT_MAX_POOL_NAMES",
    "ENV_CAPTURE_CONTENT",
    "ENV_CAPTURE_REQUEST_DETAILS",
    "ENV_CONTENT_MAX_LENGTH",
    "ENV_LOOP_BLOCK_THRESHOLD_MS",
    "ENV_LOOP_INTERVAL_MS",
    "ENV_LOOP_MONITOR",
    "ENV_MAX_POOL_NAMES",
    "ENV_MAX_SPANS_PER_REQUEST",
    "ENV_PATHS",
    "ENV_ROOT_SPANS",
    "ENV_RUN_SPANS",
    "ENV_SDK_DISABLED",
    "ENV_WAIT_SPAN_THRESHOLD_MS",
    "MAX_SPANS_CAP",
    "NOT_GIVEN",
    "PATHS",
    "PATH_ANTHROPIC",
    "PATH_ANYIO",
    "PATH_HTTP_CLIENTS",
    "PATH_OPENAI",
    "PATH_PROCESS_POOL",
    "PATH_STARLETTE",
    "PATH_THREAD_POOL",
    "Settings",
    "sdk_disabled",
]

ENV_WAIT_SPAN_THRESHOLD_MS: Final = "OTEL_POOLSCOPE_WAIT_SPAN_THRESHOLD_MS"
ENV_RUN_SPANS: Final = "OTEL_POOLSCOPE_RUN_SPANS"
ENV_ROOT_SPANS: Final = "OTEL_POOLSCOPE_ROOT_SPANS"
ENV_PATHS: Final = "OTEL_POOLSCOPE_PATHS"
ENV_MAX_SPANS_PER_REQUEST: Final = "OTEL_POOLSCOPE_MAX_SPANS_PER_REQUEST"
ENV_MAX_POOL_NAMES: Final = "OTEL_POOLSCOPE_MAX_POOL_NAMES"
ENV_LOOP_MONITOR: Final = "OTEL_POOLSCOPE_LOOP_MONITOR"
ENV_LOOP_INTERVAL_MS: Final = "OTEL_POOLSCOPE_LOOP_INTERVAL_MS"
ENV_LOOP_BLOCK_THRESHOLD_MS: Final = "OTEL_POOLSCOPE_LOOP_BLOCK_THRESHOLD_MS"
ENV_SDK_DISABLED: Final = "OTEL_SDK_DISABLED"
"""OpenTelemetry's switch for the whole SDK: ``true`` (any case) and poolscope installs nothing."""
ENV_CAPTURE_CONTENT: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""The GenAI conventions' own switch for prompt/completion capture (off by default)."""
ENV_CONTENT_MAX_LENGTH: Final = "OTEL_POOLSCOPE_GENAI_CONTENT_MAX_LENGTH"
ENV_CAPTURE_REQUEST_DETAILS: Final = "OTEL_POOLSCOPE_CAPTURE_REQUEST_DETAILS"
_CAPTURE_ON: Final = frozenset({"true", "span_only", "span_and_event"})
_CAPTURE_OFF: Final = frozenset({"false", "no_content", "event_only"})

PATH_THREAD_POOL: Final = "thread_pool"
PATH_PROCESS_POOL: Final = "process_pool"
PATH_ANYIO: Final = "anyio"
PATH_STARLETTE: Final = "starlette"
PATH_OPENAI: Final = "openai"
PATH_ANTHROPIC: Final = "anthropic"
PATH_HTTP_CLIENTS: Final = "http_clients"
PATHS: Final[tuple[str, ...]] = (
    PATH_THREAD_POOL,
    PATH_PROCESS_POOL,
    PATH_ANYIO,
    PATH_STARLETTE,
    PATH_OPENAI,
    PATH_ANTHROPIC,
    PATH_HTTP_CLIENTS,
)
"""Offload paths poolscope can patch; all are on by default."""

_DEFAULT_WAIT_SPAN_THRESHOLD: Final = 0.001
_DEFAULT_MAX_SPANS_PER_REQUEST: Final = 32
DEFAULT_MAX_POOL_NAMES: Final = 200
_DEFAULT_LOOP_INTERVAL: Final = 0.05
_DEFAULT_LOOP_BLOCK_THRESHOLD: Final = 0.1
MAX_SPANS_CAP: Final = 100_000


def sdk_disabled(env: Mapping[str, str] = os.environ) -> bool:
    """Whether ``OTEL_SDK_DISABLED`` turns telemetry off, read as the SDK reads it.

    The SDK's providers then record nothing; poolscope's patches would cost the
    app without a figure to show for it, so none are made.
    """
    return env.get(ENV_SDK_DISABLED, "").strip().lower() == "true"


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
    ``max_spans_per_request``: task spans one request may emit; the rest only
    count (in metrics and the roll-up).
    ``max_pool_names``: distinct pool names metrics may carry; pools named
    after that are counted under ``other`` (spans keep their names).
    ``loop_monitor``: measure event-loop lag and report blocked loops.
    ``loop_interval``: seconds between two lag measurements.
    ``loop_block_threshold``: seconds of lag that count as a blocked loop.
    ``capture_content``: record LLM prompts and completions on spans (personal
    data: off unless asked for). ``content_max_length``: characters kept of each.
    ``capture_request_details``: keep query values on the server span; by
    default they are replaced with ``REDACTED`` (a query string often carries
    the prompt or a token).
    """

    wait_span_threshold: float = _DEFAULT_WAIT_SPAN_THRESHOLD
    run_spans: bool = True
    root_spans: bool = False
    paths: frozenset[str] = frozenset(PATHS)
    max_spans_per_request: int = _DEFAULT_MAX_SPANS_PER_REQUEST
    max_pool_names: int = DEFAULT_MAX_POOL_NAMES
    loop_monitor: bool = True
    loop_interval: float = _DEFAULT_LOOP_INTERVAL
    loop_block_threshold: float = _DEFAULT_LOOP_BLOCK_THRESHOLD
    capture_content: bool = False
    content_max_length: int = 4096
    capture_request_details: bool = False

    @classmethod
    def resolve(cls, *, environ: Mapping[str, str] | None = None, **given: object) -> Settings:
        """Each setting from its keyword in ``given``, else its environment variable
        (in ``environ``, default ``os.environ``), else its default; validated."""
        unknown = sorted(set(given) - set(_SETTINGS))
        if unknown:
            raise ConfigurationError(
                f"unknown setting {unknown[0]!r}; expected one of {sorted(_SETTINGS)}"
            )
        env = os.environ if environ is None else environ
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        return cls(
            **{
                name: setting.parse(
                    name, given.get(name, NOT_GIVEN), setting.env, env, defaults[name]
                )
                for name, setting in _SETTINGS.items()
            }
        )


def _resolve_seconds(
    name: str,
    value: object,
    env_name: str,
    env: Mapping[str, str],
    default: float,
    *,
    minimum: float = 0.0,
) -> float:
    if value is NOT_GIVEN:
        raw = env.get(env_name, "").strip()
        if not raw:
            return default
        problem = f"{env_name} must be a number of milliseconds >= {minimum * 1000:g}, got {raw!r}"
        try:
            millis = float(raw)
        except ValueError:
            raise ConfigurationError(problem) from None
        if not math.isfinite(millis) or millis < minimum * 1000:
            raise ConfigurationError(problem)
        return millis / 1000.0
    problem = f"{name} must be a number of seconds >= {minimum:g}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{problem} ({type(value).__name__})")
    if not math.isfinite(value) or value < minimum:
        raise ConfigurationError(problem)
    return float(value)


def _resolve_count(
    name: str, value: object, env_name: str, env: Mapping[str, str], default: int
) -> int:
    if value is NOT_GIVEN:
        raw = env.get(env_name, "").strip()
        if not raw:
            return default
        if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_SPANS_CAP:
            raise ConfigurationError(
                f"{env_name} must be a whole number from 0 to {MAX_SPANS_CAP}, got {raw!r}"
            )
        return int(raw)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SPANS_CAP:
        raise ConfigurationError(
            f"{name} must be a whole number from 0 to {MAX_SPANS_CAP}, got {value!r}"
        )
    return value


def _resolve_capture(
    name: str, value: object, env_name: str, env: Mapping[str, str], default: bool
) -> bool:
    """The GenAI conventions' values, not only true and false."""
    if value is not NOT_GIVEN:
        return _resolve_bool(name, value, env_name, env, default)
    raw = env.get(env_name, "").strip().lower()
    if not raw:
        return default
    if raw in _CAPTURE_OFF:
        return False
    if raw in _CAPTURE_ON:
        return True
    raise ConfigurationError(
        f"{env_name}: expected one of "
        f"{sorted(_CAPTURE_ON | _CAPTURE_OFF)} (any case), got {env[env_name]!r}"
    )


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


def _resolve_paths(
    name: str, value: object, env_name: str, env: Mapping[str, str], default: frozenset[str]
) -> frozenset[str]:
    if value is NOT_GIVEN:
        raw = env.get(env_name)
        if raw is None or not raw.strip():
            return default
        names: Iterable[object] = [part.strip() for part in raw.split(",") if part.strip()]
        source = env_name
    elif isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigurationError(
            f"{name} must be a collection of path names from {list(PATHS)}, got {value!r}"
        )
    else:
        names = value
        source = name
    chosen = set()
    for item in names:
        if item not in PATHS:
            raise ConfigurationError(
                f"{source}: expected each path to be one of {list(PATHS)}, got {item!r}"
            )
        chosen.add(str(item))
    return frozenset(chosen)


@dataclass(frozen=True, slots=True)
class _Setting:
    env: str
    """The environment variable read when the keyword is not given."""
    parse: Callable[[str, object, str, Mapping[str, str], Any], Any]
    """(name, keyword value or NOT_GIVEN, variable, environment, default) -> value."""


_SETTINGS: Final[dict[str, _Setting]] = {
    "wait_span_threshold": _Setting(ENV_WAIT_SPAN_THRESHOLD_MS, _resolve_seconds),
    "run_spans": _Setting(ENV_RUN_SPANS, _resolve_bool),
    "root_spans": _Setting(ENV_ROOT_SPANS, _resolve_bool),
    "paths": _Setting(ENV_PATHS, _resolve_paths),
    "max_spans_per_request": _Setting(ENV_MAX_SPANS_PER_REQUEST, _resolve_count),
    "max_pool_names": _Setting(ENV_MAX_POOL_NAMES, _resolve_count),
    "loop_monitor": _Setting(ENV_LOOP_MONITOR, _resolve_bool),
    "loop_interval": _Setting(
        ENV_LOOP_INTERVAL_MS, functools.partial(_resolve_seconds, minimum=0.001)
    ),
    "loop_block_threshold": _Setting(
        ENV_LOOP_BLOCK_THRESHOLD_MS, functools.partial(_resolve_seconds, minimum=0.001)
    ),
    "capture_content": _Setting(ENV_CAPTURE_CONTENT, _resolve_capture),
    "content_max_length": _Setting(ENV_CONTENT_MAX_LENGTH, _resolve_count),
    "capture_request_details": _Setting(ENV_CAPTURE_REQUEST_DETAILS, _resolve_bool),
}
"""Every setting's variable and parser, in one place; its type and default are the
field of :class:`Settings` of the same name."""
