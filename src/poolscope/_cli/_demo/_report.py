"""The demo's report: the probe's, plus the two apps compared and a starved request's waterfall."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from ... import semconv
from .._probe._model import ProbeRun
from .._probe._report import M, W, escape, machine_note, page, seconds, verdict_lines
from ._model import FIXED, NAIVE, SCENARIOS, DemoSettings

__all__ = [
    "conclusions",
    "render",
    "representative_request",
    "speedup",
    "waterfall_figure",
    "write_report",
]

SERVER_KIND: Final = 2  # OTLP SpanKind SPAN_KIND_SERVER
TITLE: Final = "poolscope demo: a naive LLM app against the same app fixed"


def speedup(run: ProbeRun, scenario: str, concurrency: int) -> float | None:
    """The fixed app's throughput over the naive app's, at one step."""
    naive, fixed = run.step(NAIVE, scenario, concurrency), run.step(FIXED, scenario, concurrency)
    if naive is None or fixed is None or not naive.load.throughput:
        return None
    return fixed.load.throughput / naive.load.throughput


def conclusions(run: ProbeRun) -> list[str]:
    """The verdicts in plain words, then the two apps compared, from the run's own figures."""
    lines = verdict_lines(run)
    top = max(run.settings.steps)
    for scenario in SCENARIOS:
        ratio = speedup(run, scenario.name, top)
        naive = run.step(NAIVE, scenario.name, top)
        fixed = run.step(FIXED, scenario.name, top)
        if ratio is None or naive is None or fixed is None:
            continue
        lines.append(
            f"With {top} users on the {scenario.name}, the fixed app served "
            f"{fixed.load.throughput:.1f} requests/s against the naive app's "
            f"{naive.load.throughput:.1f}: {ratio:.1f}x, with p95 latency "
            f"{seconds(fixed.load.percentile(0.95))} instead of "
            f"{seconds(naive.load.percentile(0.95))}."
        )
    lines.append(machine_note(run))
    lines.append(
        "What the fix changed: the async OpenAI and HTTP clients hold no thread while the "
        "model thinks, the remaining blocking work has its own named executor, and a "
        "semaphore sized to the provider's quota is the only cap left."
    )
    return lines


def representative_request(run: ProbeRun) -> list[Any]:
    """The spans of a starved request: median wait among the naive app's waiting requests."""
    spans = run.spans
    top = run.step(NAIVE, SCENARIOS[0].name, max(run.settings.steps))
    if not spans or top is None:
        return []
    start, end = top.load.started * 1e9, top.load.ended * 1e9
    starved = [
        s
        for s in spans
        if s.kind == SERVER_KIND
        and start <= s.start_ns <= end
        and float(s.attributes.get(semconv.ATTR_EXECUTOR_WAIT_TOTAL) or 0) > 0
    ]
    if not starved:
        return []
    starved.sort(key=lambda s: float(s.attributes[semconv.ATTR_EXECUTOR_WAIT_TOTAL]))
    chosen = starved[len(starved) // 2]
    return sorted((s for s in spans if s.trace_id == chosen.trace_id), key=lambda s: s.start_ns)


def waterfall_figure(run: ProbeRun) -> str:
    spans = representative_request(run)
    if not spans:
        where = run.traces_sent_to or "the trace store"
        return (
            '<figure id="waterfall"><figcaption>Waterfall of a starved request</figcaption>'
            f"<p>Traces went to {escape(where)}; open the slowest executor.wait span there.</p>"
            "</figure>"
        )
    first = min(s.start_ns for s in spans)
    last = max(s.end_ns for s in spans)
    row = 22
    height = M["top"] + row * len(spans) + M["bottom"]
    label_width = 230
    scale = (W - label_width - 20) / max(1, last - first)
    parts = []
    depth = _depths(spans)
    for i, span in enumerate(spans):
        y = M["top"] + i * row
        x = label_width + (span.start_ns - first) * scale
        width = max(1.5, (span.end_ns - span.start_ns) * scale)
        waiting = span.name == semconv.SPAN_WAIT
        color = "#d6452f" if waiting else "#2f7ed6" if span.kind == SERVER_KIND else "#7a8899"
        pool = span.attributes.get(semconv.ATTR_EXECUTOR_NAME)
        name = f"{span.name} ({pool})" if pool else span.name
        parts.append(
            f'<g class="series" data-series="{escape("wait" if waiting else "span")}">'
            f'<text class="tick" x="{4 + 10 * depth.get(span.span_id, 0)}" y="{y + 15}">'
            f"{escape(name[:34])}</text>"
            f'<rect x="{x:.1f}" y="{y + 4}" width="{width:.1f}" height="{row - 8}" fill="{color}"/>'
            f'<text class="tick" x="{min(x + width + 4, W - 60):.1f}" y="{y + 15}">'
            f"{escape(seconds(span.seconds))}</text></g>"
        )
    title = (
        "Waterfall of a starved request of the naive app (median wait at the highest load); "
        "red: waiting for a worker"
    )
    return (
        f'<figure id="waterfall"><figcaption>{escape(title)}</figcaption>'
        f'<svg viewBox="0 0 {W} {height}" width="{W}" height="{height}" role="img" '
        f'aria-label="{escape(title)}">{"".join(parts)}</svg></figure>'
    )


def _depths(spans: Sequence[Any]) -> dict[str, int]:
    parents = {s.span_id: s.parent_id for s in spans}
    depths = {}
    for span in spans:
        depth, current = 0, span.parent_id
        while current in parents and depth < 20:
            depth, current = depth + 1, parents[current]
        depths[span.span_id] = depth
    return depths


def render(run: ProbeRun, settings: DemoSettings) -> str:
    intro = f"""<p>Both apps ran on this machine against a fake OpenAI-compatible server
(first token {settings.first_token_ms:g} ms, {settings.tokens} tokens of
{settings.per_token_ms:g} ms), {settings.step_seconds:g} s per step at
{", ".join(str(s) for s in settings.steps)} concurrent users, in
{run.elapsed:.0f} s. Every figure below comes from this run.</p>"""
    return page(run, TITLE, intro, conclusions(run), waterfall_figure(run))


def write_report(run: ProbeRun, settings: DemoSettings, path: Path) -> None:
    path.write_text(render(run, settings), encoding="utf-8")
