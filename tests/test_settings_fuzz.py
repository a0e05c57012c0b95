"""Every setting, by keyword and by environment variable, fed anything: a valid setting or
a ConfigurationError that names the setting, at configure time; never another exception."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from poolscope import ConfigurationError
from poolscope import _config as c
from poolscope._sdk._configure import _Plan

pytestmark = pytest.mark.properties

SETTINGS = {
    "wait_span_threshold": c.ENV_WAIT_SPAN_THRESHOLD_MS,
    "run_spans": c.ENV_RUN_SPANS,
    "root_spans": c.ENV_ROOT_SPANS,
    "paths": c.ENV_PATHS,
    "max_spans_per_request": c.ENV_MAX_SPANS_PER_REQUEST,
    "max_pool_names": c.ENV_MAX_POOL_NAMES,
    "loop_monitor": c.ENV_LOOP_MONITOR,
    "loop_interval": c.ENV_LOOP_INTERVAL_MS,
    "loop_block_threshold": c.ENV_LOOP_BLOCK_THRESHOLD_MS,
    "capture_content": c.ENV_CAPTURE_CONTENT,
    "content_max_length": c.ENV_CONTENT_MAX_LENGTH,
    "capture_request_details": c.ENV_CAPTURE_REQUEST_DETAILS,
}
CONFIGURE_KEYWORDS = (
    "service_name",
    "otlp_endpoint",
    "otlp_protocol",
    "prometheus_port",
    "prometheus_host",
)
CONFIGURE_VARIABLES = (
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_POOLSCOPE_PROMETHEUS_PORT",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
)
SPAN_QUEUE_VARIABLES = ("OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE")

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.binary(max_size=10),
    st.lists(st.one_of(st.text(max_size=12), st.integers()), max_size=4),
    st.sampled_from(["", " ", "-1", "0", "1e309", "nan", "²", "٣", "10_000", "true", "TRUE"]),
)
env_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        ["", " ", "-1", "0", "00", "1e309", "nan", "inf", "²", "٣", "10_000", "9" * 40]
    ),
)
FUZZ = settings(max_examples=150, deadline=None)


def _expect_valid_or_named(call: Any, name: str) -> None:
    refused = None
    try:
        call()
    except ConfigurationError as error:  # anything else fails the test as it is
        refused = str(error)
    assert refused is None or name in refused, (name, refused)


@pytest.mark.parametrize("keyword", sorted(SETTINGS))
@FUZZ
@given(value=anything)
def test_every_setting_keyword(keyword: str, value: object) -> None:
    _expect_valid_or_named(lambda: c.Settings.resolve(**{keyword: value}, environ={}), keyword)


@pytest.mark.parametrize("keyword", sorted(SETTINGS))
@FUZZ
@given(raw=env_text)
def test_every_setting_variable(keyword: str, raw: str) -> None:
    variable = SETTINGS[keyword]
    _expect_valid_or_named(lambda: c.Settings.resolve(environ={variable: raw}), variable)


def _plan(env: dict[str, str], **given_values: object) -> Any:
    keywords: dict[str, object] = {name: None for name in CONFIGURE_KEYWORDS}
    keywords.update(given_values)
    return _Plan.resolve(env, **keywords)


@pytest.mark.parametrize("keyword", CONFIGURE_KEYWORDS)
@FUZZ
@given(value=anything)
def test_every_configure_keyword(keyword: str, value: object) -> None:
    _expect_valid_or_named(lambda: _plan({}, **{keyword: value}), keyword)


@pytest.mark.parametrize("variable", CONFIGURE_VARIABLES)
@FUZZ
@given(raw=env_text)
def test_every_configure_variable(variable: str, raw: str) -> None:
    _expect_valid_or_named(lambda: _plan({variable: raw}), variable)


def _settable(value: str) -> bool:
    """What a real environment can hold: no NUL, encodable."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


size_text = (env_text | st.integers(-5, 5000).map(str)).filter(_settable)


@FUZZ
@given(queue=size_text, batch=size_text)
def test_span_queue_sizes_the_plan_accepts_the_sdk_accepts(queue: str, batch: str) -> None:
    """The SDK checks these itself, later, with a bare ValueError; the plan must refuse
    first (naming a variable) everything the SDK would refuse."""
    env = dict(zip(SPAN_QUEUE_VARIABLES, (queue, batch), strict=True))
    refused = None
    try:
        _plan(env)
    except ConfigurationError as error:
        refused = str(error)
    if refused is not None:
        assert any(variable in refused for variable in SPAN_QUEUE_VARIABLES), refused
        return
    saved = {variable: os.environ.get(variable) for variable in SPAN_QUEUE_VARIABLES}
    os.environ.update(env)
    try:
        BatchSpanProcessor(InMemorySpanExporter()).shutdown()
    finally:
        for variable, value in saved.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value
