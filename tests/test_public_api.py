"""The public surface is what we mean it to be, and the telemetry contract is documented."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import poolscope
from poolscope import semconv

EXPECTED_API = {
    "BlockSite",
    "Diagnosis",
    "PoolWindow",
    "ProcessWindow",
    "Verdict",
    "VerdictKind",
    "diagnose",
    "windows_from_prometheus",
    "ConfigurationError",
    "InstrumentedCapacityLimiter",
    "InstrumentedSemaphore",
    "LLMCall",
    "PoolscopeInstrumentor",
    "PoolscopeMiddleware",
    "__version__",
    "configure",
    "instrument",
    "instrument_executor",
    "instrument_limiter",
    "instrument_semaphore",
    "llm_call",
    "uninstrument",
}

DOCS = Path(__file__).resolve().parent.parent / "docs" / "telemetry.md"


def test_public_names_are_exactly_the_intended_ones() -> None:
    assert set(poolscope.__all__) == EXPECTED_API
    for name in poolscope.__all__:
        assert hasattr(poolscope, name), name


def test_every_public_module_declares_all_of_its_constants() -> None:
    constants = {name for name in vars(semconv) if name.isupper() and not name.startswith("_")}
    assert set(semconv.__all__) == constants


def test_the_contract_document_names_every_metric_span_and_attribute() -> None:
    text = DOCS.read_text()
    for name in semconv.__all__:
        value = getattr(semconv, name)
        if isinstance(value, str):
            assert f"`{value}`" in text, f"docs/telemetry.md does not mention {name} = {value!r}"
    coarse = [b for b in semconv.DURATION_BUCKETS if b < 0.01]
    dense = [b for b in semconv.DURATION_BUCKETS if 0.01 <= b < 60]
    layout = (
        f"{', '.join(f'{b:g}' for b in coarse)}, then {semconv.BUCKETS_PER_DECADE} bounds "
        f"per decade from {dense[0]:g} to {dense[-1]:g} ({dense[0]:g}, {dense[1]:g}, "
        f"{dense[2]:g}, …, {dense[-2]:g}, {dense[-1]:g}), then {semconv.DURATION_BUCKETS[-1]:g}"
    )
    assert layout in text
    assert ", ".join(f"{b:g}" for b in semconv.LAG_BUCKETS) in text


def test_the_contract_document_states_the_verdicts_thresholds() -> None:
    from poolscope import _thresholds

    text = DOCS.read_text()
    for kind in poolscope.VerdictKind:
        assert f"| `{kind}` |" in text, kind
    assert len(_thresholds.__all__) == 9
    for name in _thresholds.__all__:
        assert f"{getattr(_thresholds, name):g}" in text, name


def test_the_contract_document_names_every_setting() -> None:
    from poolscope import _config

    text = DOCS.read_text()
    variables = [getattr(_config, name) for name in _config.__all__ if name.startswith("ENV_")]
    assert len(variables) >= 12
    for variable in variables:
        assert f"`{variable}`" in text, variable
    for field in dataclasses.fields(_config.Settings):
        assert f"| `{field.name}`" in text, field.name


def test_version_is_pep440() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]\d+)?", poolscope.__version__)
