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
    "ENV_WAIT_SPAN_THRESHOLD_MS",
    "NOT_GIVEN",
    "PATHS",
    "PATH_ANYIO",
    "PATH_OPENAI",
    "PATH_PROCESS_POOL",
    "PATH_STARLETTE",
    "PATH_THREAD_POOL",
    "Settings",
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
PATHS: Final[tuple[str, ...]] = (
    PATH_THREAD_POOL,
    PATH_PROCESS_POOL,
    PATH_ANYIO,
    PATH_STARLETTE,
    PATH_OPENAI,
)
"""Offload paths poolscope can patch; all are on by default."""

_DEFAULT_WAIT_SPAN_THRESHOLD: Final = 0.001
_DEFAULT_MAX_SPANS_PER_REQUEST: Final = 32
DEFAULT_MAX_POOL_NAMES: Final = 200
_DEFAULT_LOOP_INTERVAL: Final = 0.05
_DEFAULT_LOOP_BLOCK_THRESHOLD: Final = 0.1
_MAX_SPANS_CAP: Final = 100_000


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
    def resolve(
        cls,
        *,
        wait_span_threshold: object = NOT_GIVEN,
        run_spans: object = NOT_GIVEN,
        root_spans: object = NOT_GIVEN,
        paths: object = NOT_GIVEN,
        max_spans_per_request: object = NOT_GIVEN,
        max_pool_names: object = NOT_GIVEN,
        loop_monitor: object = NOT_GIVEN,
        loop_interval: object = NOT_GIVEN,
        loop_block_threshold: object = NOT_GIVEN,
        capture_content: object = NOT_GIVEN,
        content_max_length: object = NOT_GIVEN,
        capture_request_details: object = NOT_GIVEN,
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
            max_spans_per_request=_resolve_count(
                "max_spans_per_request",
                max_spans_per_request,
                ENV_MAX_SPANS_PER_REQUEST,
                env,
                _DEFAULT_MAX_SPANS_PER_REQUEST,
            ),
            max_pool_names=_resolve_count(
                "max_pool_names",
                max_pool_names,
                ENV_MAX_POOL_NAMES,
                env,
                DEFAULT_MAX_POOL_NAMES,
            ),
            loop_monitor=_resolve_bool("loop_monitor", loop_monitor, ENV_LOOP_MONITOR, env, True),
            loop_interval=_resolve_seconds(
                "loop_interval",
                loop_interval,
                ENV_LOOP_INTERVAL_MS,
                env,
                _DEFAULT_LOOP_INTERVAL,
                minimum=0.001,
            ),
            loop_block_threshold=_resolve_seconds(
                "loop_block_threshold",
                loop_block_threshold,
                ENV_LOOP_BLOCK_THRESHOLD_MS,
                env,
                _DEFAULT_LOOP_BLOCK_THRESHOLD,
                minimum=0.001,
            ),
            capture_content=_resolve_capture(capture_content, env),
            content_max_length=_resolve_count(
                "content_max_length", content_max_length, ENV_CONTENT_MAX_LENGTH, env, 4096
            ),
            capture_request_details=_resolve_bool(
                "capture_request_details",
                capture_request_details,
                ENV_CAPTURE_REQUEST_DETAILS,
                env,
                False,
            ),
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
        if not (raw.isascii() and raw.isdigit()) or int(raw) > _MAX_SPANS_CAP:
            raise ConfigurationError(
                f"{env_name} must be a whole number from 0 to {_MAX_SPANS_CAP}, got {raw!r}"
            )
        return int(raw)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_SPANS_CAP:
        raise ConfigurationError(
            f"{name} must be a whole number from 0 to {_MAX_SPANS_CAP}, got {value!r}"
        )
    return value


def _resolve_capture(value: object, env: Mapping[str, str]) -> bool:
    if value is not NOT_GIVEN:
        return _resolve_bool("capture_content", value, ENV_CAPTURE_CONTENT, env, False)
    raw = env.get(ENV_CAPTURE_CONTENT, "").strip().lower()
    if not raw or raw in _CAPTURE_OFF:
        return False
    if raw in _CAPTURE_ON:
        return True
    raise ConfigurationError(
        f"{ENV_CAPTURE_CONTENT}: expected one of "
        f"{sorted(_CAPTURE_ON | _CAPTURE_OFF)} (any case), got {env[ENV_CAPTURE_CONTENT]!r}"
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
