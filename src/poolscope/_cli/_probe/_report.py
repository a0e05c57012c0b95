"""A probe's results: tables on the terminal, and a self-contained HTML report.

The report inlines everything (styles, SVG plots drawn here, no scripts, no
fonts, no network): latency against concurrency for every app, busy workers
over time against each pool's cap, and the distribution of queue waits. The
demo adds its own figures and conclusions (``_demo._report``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any, Final, TextIO

from ... import semconv
from ..._analysis._readings import Histogram
from ._model import POOL_EXPLAINED, ProbeRun, StepResult

__all__ = [
    "CSP",
    "H",
    "M",
    "W",
    "busy_figure",
    "escape",
    "latency_figure",
    "machine_note",
    "page",
    "print_results",
    "seconds",
    "verdict_lines",
    "wait_figure",
]

COLORS: Final = {"naive": "#d6452f", "fixed": "#2f7ed6"}
POOL_COLORS: Final = ("#d6452f", "#e69a1f", "#6a4fc9", "#2a9d6f", "#2f7ed6", "#8c8c8c")


# --- Terminal ------------------------------------------------------------------------


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _cores(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _row(step: StepResult) -> list[str]:
    load = step.load
    pool = step.saturated_pool()
    saturated = f"{pool.pool} {pool.busy_peak:g}/{pool.limit:g}" if pool else "none"
    if not step.pools_visible:
        saturated = "not visible"
    share = step.wait_share
    process = step.process
    machine = step.machine
    return [
        str(load.concurrency),
        f"{load.throughput:.1f}",
        str(load.lost),
        seconds(load.percentile(0.5)),
        seconds(load.percentile(0.95)),
        seconds(load.percentile(0.99)),
        "-" if share is None else f"{share:.0%}",
        saturated,
        seconds(step.lag_p99),
        _cores(process.cpu if process else None),
        _cores(machine.load_generator),
        f"{_cores(machine.machine)}/{machine.cores}" + (" !" if machine.exhausted else ""),
    ]


POOL_COLUMN: Final = 7
HEADERS: Final = [
    "users",
    "req/s",
    "lost",
    "p50",
    "p95",
    "p99",
    "waiting",
    "saturated pool busy/limit",
    "loop lag p99",
    "app cpu",
    "loadgen cpu",
    "machine cpu",
]
CPU_NOTE: Final = (
    "cpu: cores used on average in the step, by the app, by poolscope's load generator, and by "
    "the whole machine (of its cores; ! = the machine was out of CPU: its figures measure the "
    "machine, not the app)"
)


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in [HEADERS, *rows]) for i in range(len(HEADERS))]
    lines = []
    for row in [HEADERS, *rows]:
        cells = [
            c.ljust(w) if i == POOL_COLUMN else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  " + "  ".join(cells))
    return "\n".join(lines)


def verdict_lines(run: ProbeRun) -> list[str]:
    """The verdicts in plain words, per app; what could not be seen, said as such."""
    lines = []
    for key, target in run.targets.items():
        if target.metrics is None:
            lines.append(
                f"{target.name}: pools are not visible ({target.blind}); the latencies above "
                "are all this run can say. To see the pools, run poolscope in the app "
                "(poolscope.configure() with OTEL_POOLSCOPE_PROMETHEUS_PORT set) and pass its "
                "endpoint with --metrics."
            )
            continue
        diagnosis = run.diagnoses.get(key)
        if diagnosis is None:
            continue
        if diagnosis.ok:
            lines.append(f"{target.name}: {diagnosis.summary()}")
        for verdict in diagnosis.verdicts:
            what = ""
            if verdict.pool is not None:
                kind = verdict.evidence.get("type") or "pool"
                explained = POOL_EXPLAINED.get(verdict.pool, f"the {kind} {verdict.pool}")
                what = f" [{explained}]"
            lines.append(f"{target.name}: {verdict.summary}{what}. {verdict.advice}.")
    return lines


def machine_note(run: ProbeRun) -> str:
    """How busy the load generator and the machine were, and which steps measured the machine."""
    if not run.steps:
        return "No step ran."
    cores = run.steps[0].machine.cores
    busiest = max(run.steps, key=lambda s: s.machine.machine or 0.0)
    generator = max(s.machine.load_generator for s in run.steps)
    exhausted = [s for s in run.steps if s.machine.exhausted]
    note = (
        f"The load generator used at most {generator:.2f} cores; the machine ({cores} cores) "
        f"was at most {_cores(busiest.machine.machine)} cores busy ({_name(run, busiest)}, "
        f"{busiest.scenario}, {busiest.load.concurrency} users)"
    )
    if not exhausted:
        apps = "the apps" if len(run.targets) > 1 else "the app"
        return note + f": {apps}, not the machine, set every figure."
    where = ", ".join(
        f"{_name(run, s)} {s.scenario} at {s.load.concurrency} users" for s in exhausted
    )
    return note + f". The machine was out of CPU in: {where}; those figures measure the machine."


def _name(run: ProbeRun, step: StepResult) -> str:
    target = run.targets.get(step.app)
    return target.name if target is not None else step.app


def print_results(run: ProbeRun, conclusions: Sequence[str], out: TextIO) -> None:
    """A table per app and scenario, then ``conclusions``."""
    for key, target in run.targets.items():
        for scenario in target.scenarios:
            rows = [_row(s) for s in run.steps if s.app == key and s.scenario == scenario.name]
            if not rows:
                continue
            out.write(f"\n{target.name}: {scenario.name} ({', '.join(scenario.paths)})\n")
            out.write(_table(rows) + "\n")
    out.write(f"({CPU_NOTE})\n")
    out.write("\nDiagnosis\n")
    for line in conclusions:
        out.write(f"- {line}\n")


# --- SVG ---------------------------------------------------------------------------

W: Final = 760
H: Final = 300
M: Final = {"left": 64, "right": 200, "top": 20, "bottom": 44}


def escape(text: object) -> str:
    return html.escape(str(text), quote=True)


class _Axes:
    def __init__(self, xs: Iterable[float], ys: Iterable[float], *, x_log: bool = False) -> None:
        xs, ys = list(xs), list(ys)
        self.x_log = x_log
        self.x0, self.x1 = (min(xs), max(xs)) if xs else (1.0, 10.0)
        if x_log and self.x0 <= 0:
            self.x0 = 1.0
        if self.x1 == self.x0:
            self.x1 = self.x0 + 1
        self.y1 = max(ys) * 1.1 if ys and max(ys) > 0 else 1.0

    def x(self, value: float) -> float:
        if self.x_log:
            span = math.log10(self.x1) - math.log10(self.x0)
            share = (math.log10(value) - math.log10(self.x0)) / span if span else 0.5
        else:
            share = (value - self.x0) / (self.x1 - self.x0)
        return M["left"] + share * (W - M["left"] - M["right"])

    def y(self, value: float) -> float:
        return H - M["bottom"] - (value / self.y1) * (H - M["top"] - M["bottom"])

    def frame(self, x_label: str, y_label: str, x_ticks: Iterable[float], y_unit: str) -> str:
        parts = [
            f'<line class="axis" x1="{M["left"]}" y1="{H - M["bottom"]}" '
            f'x2="{W - M["right"]}" y2="{H - M["bottom"]}"/>',
            f'<line class="axis" x1="{M["left"]}" y1="{M["top"]}" x2="{M["left"]}" '
            f'y2="{H - M["bottom"]}"/>',
            f'<text class="label" x="{(W - M["right"] + M["left"]) / 2}" y="{H - 6}" '
            f'text-anchor="middle">{escape(x_label)}</text>',
            f'<text class="label" x="14" y="{(H - M["bottom"] + M["top"]) / 2}" '
            f'transform="rotate(-90 14 {(H - M["bottom"] + M["top"]) / 2})" '
            f'text-anchor="middle">{escape(y_label)}</text>',
        ]
        for tick in x_ticks:
            parts.append(
                f'<text class="tick" x="{self.x(tick):.1f}" y="{H - M["bottom"] + 16}" '
                f'text-anchor="middle">{tick:g}</text>'
            )
        for i in range(5):
            value = self.y1 * i / 4
            label = f"{value:.2f}{y_unit}" if self.y1 < 10 else f"{value:.0f}{y_unit}"
            parts.append(
                f'<text class="tick" x="{M["left"] - 6}" y="{self.y(value) + 4:.1f}" '
                f'text-anchor="end">{label}</text>'
                f'<line class="grid" x1="{M["left"]}" y1="{self.y(value):.1f}" '
                f'x2="{W - M["right"]}" y2="{self.y(value):.1f}"/>'
            )
        return "".join(parts)


def _legend(entries: Sequence[tuple[str, str, bool]]) -> str:
    parts = []
    for i, (name, color, dashed) in enumerate(entries):
        y = M["top"] + 14 + i * 18
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        parts.append(
            f'<line x1="{W - M["right"] + 10}" y1="{y - 4}" x2="{W - M["right"] + 30}" '
            f'y2="{y - 4}" stroke="{color}" stroke-width="2"{dash}/>'
            f'<text class="tick" x="{W - M["right"] + 36}" y="{y}">{escape(name)}</text>'
        )
    return "".join(parts)


def _svg(figure: str, title: str, body: str) -> str:
    return (
        f'<figure id="{escape(figure)}"><figcaption>{escape(title)}</figcaption>'
        f'<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
        f'aria-label="{escape(title)}">{body}</svg></figure>'
    )


def _polyline(
    series: str, points: Sequence[tuple[float, float]], color: str, dashed: bool = False
) -> str:
    dash = ' stroke-dasharray="6 4"' if dashed else ""
    coordinates = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    dots = (
        "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"/>' for x, y in points)
        if not dashed and len(points) < 40
        else ""
    )
    return (
        f'<g class="series" data-series="{escape(series)}">'
        f'<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{coordinates}"/>'
        f"{dots}</g>"
    )


def latency_figure(run: ProbeRun) -> str:
    series: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for step in run.steps:
        p95 = step.load.percentile(0.95)
        if p95 is not None:
            series.setdefault((step.app, step.scenario), []).append((step.load.concurrency, p95))
    axes = _Axes(
        (x for points in series.values() for x, _ in points),
        (y for points in series.values() for _, y in points),
        x_log=True,
    )
    body = [axes.frame("concurrent users", "p95 latency", run.settings.steps, " s")]
    legend = []
    for i, ((app, scenario), points) in enumerate(series.items()):
        target = run.targets[app]
        name = f"{app} · {scenario} p95"
        dashed = scenario != target.scenarios[0].name
        color = COLORS.get(app, POOL_COLORS[i % len(POOL_COLORS)])
        body.append(_polyline(name, [(axes.x(x), axes.y(y)) for x, y in points], color, dashed))
        legend.append((name, color, dashed))
    body.append(_legend(legend))
    return _svg("latency", "Latency (p95) against concurrency", "".join(body))


def busy_figure(run: ProbeRun, app: str) -> str:
    samples = run.busy.get(app, [])
    pools = sorted({pool for _, pool, _, _ in samples})
    axes = _Axes(
        (t for t, _, _, _ in samples),
        [b for _, _, b, _ in samples] + [limit for _, _, _, limit in samples],
    )
    end = max((t for t, _, _, _ in samples), default=1.0)
    ticks = [round(end * i / 5) for i in range(6)]
    body = [axes.frame("seconds since the run started", "busy workers", ticks, "")]
    legend = []
    for i, pool in enumerate(pools):
        color = POOL_COLORS[i % len(POOL_COLORS)]
        points = [(t, b) for t, name, b, _ in samples if name == pool]
        limit = max(limit for _, name, _, limit in samples if name == pool)
        body.append(_polyline(f"{pool} busy", [(axes.x(t), axes.y(b)) for t, b in points], color))
        body.append(
            _polyline(
                f"{pool} limit",
                [(axes.x(axes.x0), axes.y(limit)), (axes.x(axes.x1), axes.y(limit))],
                color,
                dashed=True,
            )
        )
        legend += [(f"{pool} busy", color, False), (f"{pool} limit {limit:g}", color, True)]
    body.append(_legend(legend))
    service = run.services.get(app, app)
    return _svg(
        f"busy-{app}",
        f"{service}: busy workers per pool over time; the dashed line is the pool's cap",
        "".join(body),
    )


_WAIT_FIGURE_BOUNDS: Final = tuple(
    b for i, b in enumerate(semconv.DURATION_BUCKETS) if b < 0.01 or i % 13 == 4 or b == 60
)
"""The wait histogram's bounds drawn as bars: below 10 ms as recorded, then every half decade."""


def wait_figure(run: ProbeRun) -> str:
    totals: dict[str, Histogram] = {}
    for step in run.steps:
        for pool, histogram in step.wait_histograms.items():
            key = f"{step.app} · {pool}"
            totals[key] = totals.get(key, Histogram()) + histogram
    totals = {k: v.at(_WAIT_FIGURE_BOUNDS) for k, v in totals.items() if v.count}
    bounds = [*_WAIT_FIGURE_BOUNDS, math.inf]
    axes = _Axes(range(len(bounds)), [share for h in totals.values() for _, share in _shares(h)])
    body = [axes.frame("queue wait up to (s)", "share of tasks", [], "")]
    slot = (W - M["left"] - M["right"]) / len(bounds)
    for i, bound in enumerate(bounds):
        if i % 2:
            continue  # every other bound: they would overlap
        label = "∞" if math.isinf(bound) else f"{bound:g}"
        body.append(
            f'<text class="tick" x="{M["left"] + slot * (i + 0.5):.1f}" '
            f'y="{H - M["bottom"] + 16}" text-anchor="middle">{label}</text>'
        )
    legend = []
    width = slot / max(1, len(totals)) * 0.9
    for j, (name, histogram) in enumerate(sorted(totals.items())):
        color = POOL_COLORS[j % len(POOL_COLORS)]
        bars = []
        for i, (_, share) in enumerate(_shares(histogram)):
            x = M["left"] + slot * i + width * j + slot * 0.05
            y = axes.y(share)
            bars.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" '
                f'height="{H - M["bottom"] - y:.1f}" fill="{color}"/>'
            )
        body.append(f'<g class="series" data-series="{escape(name)}">{"".join(bars)}</g>')
        legend.append((name, color, False))
    body.append(_legend(legend))
    return _svg("waits", "How long tasks waited for a worker, per app and pool", "".join(body))


def _shares(histogram: Any) -> list[tuple[float, float]]:
    total = histogram.count or 1
    return [(le, n / total) for le, n in histogram.bars()]


# --- HTML ----------------------------------------------------------------------------

CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
"""Everything is inline; the page may load nothing."""
STYLE: Final = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 980px; color: #1d2329; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #dde; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { padding: 3px 10px; text-align: right; border-bottom: 1px solid #eef; }
td.pool, th.pool { text-align: left; }
figure { margin: 1.5em 0; } figcaption { font-weight: 600; margin-bottom: .4em; }
svg { background: #fbfcfe; border: 1px solid #e3e6ee; }
.axis { stroke: #445; } .grid { stroke: #e6e9f0; }
.tick { font-size: 11px; fill: #445; } .label { font-size: 12px; fill: #223; }
li { margin: .3em 0; }
"""


def _html_table(steps: Sequence[StepResult]) -> str:
    head = "".join(
        f'<th class="pool">{escape(h)}</th>' if i == POOL_COLUMN else f"<th>{escape(h)}</th>"
        for i, h in enumerate(HEADERS)
    )
    rows = []
    for step in steps:
        cells = "".join(
            f'<td class="pool">{escape(c)}</td>' if i == POOL_COLUMN else f"<td>{escape(c)}</td>"
            for i, c in enumerate(_row(step))
        )
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def page(run: ProbeRun, title: str, intro: str, conclusions: Sequence[str], extra: str = "") -> str:
    """The whole report: ``intro`` (HTML), the conclusions, the figures, every step's table."""
    sections = []
    for key, target in run.targets.items():
        for scenario in target.scenarios:
            steps = [s for s in run.steps if s.app == key and s.scenario == scenario.name]
            sections.append(
                f"<h3>{escape(target.name)}: {escape(scenario.name)} "
                f"({escape(', '.join(scenario.paths))})</h3>"
                f"<p>{escape(scenario.about)}.</p>{_html_table(steps)}"
            )
    items = "".join(f"<li>{escape(line)}</li>" for line in conclusions)
    busy = "".join(busy_figure(run, key) for key, t in run.targets.items() if t.metrics)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>{escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{escape(title)}</h1>
{intro}
<h2>Diagnosis</h2><ul>{items}</ul>
<p>{escape(CPU_NOTE)}.</p>
<h2>Latency</h2>{latency_figure(run)}
<h2>Where the requests wait</h2>
{busy}
{wait_figure(run)}
{extra}
<h2>Every step</h2>{"".join(sections)}
</body></html>
"""
