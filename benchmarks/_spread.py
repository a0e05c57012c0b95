"""The one way the benchmarks print a figure of several rounds."""

from __future__ import annotations

import statistics


def spread(values: list[float], form: str = "{:.2f}") -> str:
    """``median (lowest to highest)``, each as ``form`` formats it."""
    low, mid, high = (form.format(v) for v in (min(values), statistics.median(values), max(values)))
    return f"{mid} ({low} to {high})"
