"""Settings: keyword, then environment variable, then default; bad values fail at set-up, named."""

from __future__ import annotations

import dataclasses

import pytest

import poolscope
from poolscope import ConfigurationError
from poolscope._config import PATHS, Settings


def test_defaults() -> None:
    settings = Settings.resolve(environ={})
    assert settings == Settings(
        wait_span_threshold=0.001, run_spans=True, root_spans=False, paths=frozenset(PATHS)
    )


def test_environment_variables_are_read() -> None:
    settings = Settings.resolve(
        environ={
            "OTEL_POOLSCOPE_WAIT_SPAN_THRESHOLD_MS": "25",
            "OTEL_POOLSCOPE_RUN_SPANS": "FALSE",
            "OTEL_POOLSCOPE_ROOT_SPANS": "true",
            "OTEL_POOLSCOPE_PATHS": "thread_pool, anyio",
        }
    )
    assert settings == Settings(
        wait_span_threshold=0.025,
        run_spans=False,
        root_spans=True,
        paths=frozenset({"thread_pool", "anyio"}),
    )


def test_keywords_win_over_environment() -> None:
    settings = Settings.resolve(
        wait_span_threshold=0,
        run_spans=True,
        environ={"OTEL_POOLSCOPE_WAIT_SPAN_THRESHOLD_MS": "25"},
    )
    assert settings.wait_span_threshold == 0


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        (
            {"wait_span_threshold": -1},
            "wait_span_threshold must be a number of seconds >= 0, got -1",
        ),
        (
            {"wait_span_threshold": "1ms"},
            "wait_span_threshold must be a number of seconds >= 0, got '1ms'",
        ),
        (
            {"wait_span_threshold": float("nan")},
            "wait_span_threshold must be a number of seconds >= 0",
        ),
        ({"wait_span_threshold": True}, "wait_span_threshold must be a number of seconds"),
        ({"run_spans": "yes"}, "run_spans must be True or False, got 'yes'"),
        ({"root_spans": 1}, "root_spans must be True or False, got 1"),
        ({"paths": "anyio"}, "paths must be a collection of path names"),
        ({"paths": ["anyio", "trio"]}, "expected each path to be one of"),
    ],
)
def test_bad_keywords_name_the_setting(keywords: dict[str, object], message: str) -> None:
    with pytest.raises(
        poolscope.ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        Settings.resolve(environ={}, **keywords)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "OTEL_POOLSCOPE_WAIT_SPAN_THRESHOLD_MS",
            "-5",
            "OTEL_POOLSCOPE_WAIT_SPAN_THRESHOLD_MS must be a number",
        ),
        ("OTEL_POOLSCOPE_WAIT_SPAN_THRESHOLD_MS", "fast", "got 'fast'"),
        ("OTEL_POOLSCOPE_WAIT_SPAN_THRESHOLD_MS", "inf", "got 'inf'"),
        (
            "OTEL_POOLSCOPE_RUN_SPANS",
            "1",
            "OTEL_POOLSCOPE_RUN_SPANS must be 'true' or 'false', got '1'",
        ),
        (
            "OTEL_POOLSCOPE_ROOT_SPANS",
            "maybe",
            "OTEL_POOLSCOPE_ROOT_SPANS must be 'true' or 'false'",
        ),
        ("OTEL_POOLSCOPE_PATHS", "thread_pool,gevent", "OTEL_POOLSCOPE_PATHS: expected each path"),
    ],
)
def test_bad_environment_values_name_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(poolscope.ConfigurationError, match=message):
        Settings.resolve(environ={variable: value})


def test_instrument_rejects_bad_input_before_patching_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    original = ThreadPoolExecutor.__dict__["submit"]
    with pytest.raises(
        poolscope.ConfigurationError, match="unknown keyword argument 'wait_threshold'"
    ):
        poolscope.instrument(wait_threshold=0.5)
    with pytest.raises(poolscope.ConfigurationError, match="tracer_provider must be"):
        poolscope.instrument(tracer_provider="otlp")
    monkeypatch.setenv("OTEL_POOLSCOPE_WAIT_SPAN_THRESHOLD_MS", "soon")
    with pytest.raises(poolscope.ConfigurationError, match="OTEL_POOLSCOPE_WAIT_SPAN_THRESHOLD_MS"):
        poolscope.instrument()
    assert ThreadPoolExecutor.__dict__["submit"] is original
    assert not poolscope.PoolscopeInstrumentor().is_instrumented_by_opentelemetry


def test_instrument_accepts_every_setting_by_keyword() -> None:
    """The keywords instrument() takes are the Settings fields, not a second list."""
    defaults = Settings()
    for field in dataclasses.fields(Settings):
        try:
            poolscope.instrument(**{field.name: getattr(defaults, field.name)})
        finally:
            poolscope.uninstrument()


def test_every_setting_has_one_row_in_the_table_and_one_field() -> None:
    from poolscope import _config

    assert list(_config._SETTINGS) == [f.name for f in dataclasses.fields(Settings)]
    variables = [setting.env for setting in _config._SETTINGS.values()]
    assert len(set(variables)) == len(variables)


def test_an_unknown_setting_is_refused_naming_it() -> None:
    with pytest.raises(ConfigurationError, match="'wait_span_treshold'"):
        Settings.resolve(wait_span_treshold=0.1, environ={})
