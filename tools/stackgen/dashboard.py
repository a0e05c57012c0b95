"""The main poolscope dashboard, built with grafana-foundation-sdk.

One small factory per panel; every query comes from :mod:`.queries`. The
layout reads top to bottom as a diagnosis: are requests slow, where do they
wait (which pool, against which cap), is it the event loop instead, what do
the LLM calls hold, and the slowest waits one click away in the trace store.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, Final

from grafana_foundation_sdk.builders import common as options
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import heatmap, prometheus, table, tempo, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from poolscope import semconv
from poolscope._analysis import _promql as p
from poolscope._analysis import _queries as q
from poolscope._thresholds import CPU_BOUND_CORES

from . import alerts
from ._encoding import plain

UID: Final = "poolscope-main"
TITLE: Final = "poolscope: thread pool starvation"
RATE: Final = "$__rate_interval"
RANGE: Final = "$__range"
M: Final = q.DASHBOARD
SLOW_WAIT: Final = f"{alerts.WAIT_P95_THRESHOLD_S * 1000:.0f}ms"
"""Waits at least this long are listed from the trace store."""

PROMETHEUS: Final = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
TEMPO: Final = model.DataSourceRef(type_val="tempo", uid="${tempo}")
JAEGER: Final = model.DataSourceRef(type_val="jaeger", uid="${jaeger}")

ALL: Final = ".+"
"""The value "All" stands for in every variable: any non-empty label value."""

_WIDTH: Final = 24


class JaegerQuery(cogbuilder.Builder[cogvariants.Dataquery]):
    """A Jaeger datasource search (the SDK has no Jaeger query type)."""

    def __init__(self, ref_id: str, **search: Any) -> None:
        self._query = _RawQuery({"refId": ref_id, "queryType": "search", **search})

    def build(self) -> cogvariants.Dataquery:
        return self._query


class _RawQuery(cogvariants.Dataquery):
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def to_json(self) -> dict[str, object]:
        return dict(self.data)


# --- Helpers -------------------------------------------------------------------------


def promql(ref_id: str, expr: str, legend: str = "__auto") -> prometheus.Dataquery:
    return prometheus.Dataquery().ref_id(ref_id).expr(expr).legend_format(legend).range()


def instant(ref_id: str, expr: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().ref_id(ref_id).expr(expr).instant().format(PromQueryFormat.TABLE)


def graph(title: str, description: str, unit: str) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .unit(unit)
        .line_width(1)
        .fill_opacity(10)
        .legend(
            options.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["max", "lastNotNull"])
        )
        .tooltip(options.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI))
    )


def percentiles(
    panel: timeseries.Panel,
    expr: Callable[[float], str],
    legend: str,
    quantiles: Sequence[float] = (0.5, 0.95),
) -> timeseries.Panel:
    """One target per quantile, refIds A, B, ..., legends ``<legend> p50``."""
    for ref_id, quantile in zip("ABCDEFGH", quantiles, strict=False):
        panel = panel.with_target(promql(ref_id, expr(quantile), f"{legend} p{quantile * 100:g}"))
    return panel


def _property(name: str, value: Any) -> model.DynamicConfigValue:
    return model.DynamicConfigValue(id_val=name, value=value)


CAP_LINE: Final = [
    _property("custom.lineStyle", {"fill": "dash", "dash": [10, 10]}),
    _property("custom.lineWidth", 2),
    _property("custom.fillOpacity", 0),
    _property("color", {"mode": "fixed", "fixedColor": "red"}),
]
"""How a pool's limit is drawn: a dashed red line the busy workers run into."""


# --- Panels: requests ---------------------------------------------------------------


def request_rate() -> timeseries.Panel:
    return graph(
        "Requests per second", "Served requests by route (http.server.request.duration).", "reqps"
    ).with_target(promql("A", q.request_rate(M, RATE), "{{job}} {{http_route}}"))


def request_latency() -> timeseries.Panel:
    return percentiles(
        graph(
            "Request latency",
            "p50, p95, p99 of http.server.request.duration. Compare with the wait share below.",
            "s",
        ),
        lambda quantile: q.request_latency(quantile, M, RATE),
        "{{job}}",
        (0.5, 0.95, 0.99),
    )


def requests_in_flight() -> timeseries.Panel:
    return graph(
        "Requests in flight",
        "Requests being served right now (http.server.active_requests), per process.",
        "short",
    ).with_target(promql("A", q.requests_in_flight(M), "{{job}} {{instance}}"))


# --- Panels: fleet -------------------------------------------------------------------


def fleet_saturation() -> timeseries.Panel:
    window = alerts.WINDOW
    return (
        graph(
            "Processes with the pool saturated",
            "Per service and pool: how many processes have it saturated (busy at their own "
            f"limit most of the last {window}, tasks queued), against how many report it. "
            "Processes are never summed against one process's limit.",
            "short",
        )
        .with_target(
            promql(
                "saturated", q.saturated_processes(M, window), "{{job}} {{executor_name}} saturated"
            )
        )
        .with_target(promql("processes", q.processes(M), "{{job}} {{executor_name}} processes"))
        .override_by_query("processes", CAP_LINE)
    )


# --- Panels: pools -------------------------------------------------------------------

_TABLE_COLUMNS: Final = (
    ("limit", "Limit", "short"),
    ("peak", "Peak busy", "short"),
    ("saturation", "Busy / limit now", "percentunit"),
    ("pending", "Peak pending", "short"),
    ("wait", "Wait p95", "s"),
    ("run", "Run p95", "s"),
    ("rate", "Peak tasks/s", "ops"),
)


def _figures_table(
    title: str,
    description: str,
    labels: dict[str, str],
    columns: Sequence[tuple[str, str, str, str]],
    sort_by: str,
) -> table.Panel:
    """A table of instant queries merged into one row per label set: ``labels`` are the
    label columns (label -> title), ``columns`` (ref id, title, unit, PromQL) the figures."""
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            model.DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {"Time": True},
                    "renameByName": {
                        **labels,
                        **{f"Value #{ref}": name for ref, name, _, _ in columns},
                    },
                },
            )
        )
        .sort_by([options.TableSortByFieldState().display_name(sort_by).desc(True)])
    )
    for ref_id, _, _, expr in columns:
        panel = panel.with_target(instant(ref_id, expr))
    for ref_id, _, unit, _ in columns:
        panel = panel.override_by_name(f"Value #{ref_id}", [_property("unit", unit)])
    return panel


def where_requests_wait() -> table.Panel:
    queries = {
        "limit": q.limit(M),
        "peak": q.peak_busy(M, RANGE),
        "saturation": q.saturation(M),
        "pending": q.peak_pending(M, RANGE),
        "wait": q.wait_quantile(0.95, M, RANGE),
        "run": q.run_quantile(0.95, M, RANGE),
        "rate": q.peak_tasks_per_second(M, RATE, RANGE),
    }
    return _figures_table(
        "Where requests wait",
        "One row per pool and process over the dashboard's time range (peaks are the "
        "highest moment of the range, tasks/s the busiest rate interval). A pool whose "
        "peak busy reaches its limit, with pending tasks and a wait p95 far above zero, "
        "is where requests queue.",
        {p.SERVICE: "Service", p.INSTANCE: "Instance", p.POOL: "Pool", p.POOL_TYPE: "Type"},
        [(ref, name, unit, queries[ref]) for ref, name, unit in _TABLE_COLUMNS],
        "Busy / limit now",
    )


def waits_by_route() -> table.Panel:
    return _figures_table(
        "Which route waits, in which pool",
        "From the executor.wait spans (waits above the wait-span threshold, 1 ms by "
        "default), by the http.route of the request that handed the work to the pool. "
        "Waiting (s/s): seconds of waiting per second, about the number of that route's "
        "tasks queued at any moment.",
        {p.SERVICE: "Service", p.ROUTE: "Route", p.POOL: "Pool"},
        [
            ("waiting", "Waiting (s/s)", "short", q.wait_seconds_by_route(M, RANGE)),
            ("p95", "Wait p95", "s", q.wait_quantile_by_route(0.95, M, RANGE)),
            ("rate", "Waits/s", "ops", q.waits_per_second_by_route(M, RANGE)),
        ],
        "Waiting (s/s)",
    )


def busy_against_limit() -> timeseries.Panel:
    return (
        graph(
            "Busy workers and the cap",
            "Busy workers per pool and process; the dashed red line is that pool's limit. "
            "Busy flat against the line while requests slow down is starvation.",
            "short",
        )
        .with_target(promql("busy", q.busy(M), "{{instance}} {{executor_name}} busy"))
        .with_target(promql("limit", q.limit(M), "{{instance}} {{executor_name}} limit"))
        .override_by_query("limit", CAP_LINE)
    )


def is_it_cpu() -> timeseries.Panel:
    """Next to busy-vs-cap: a pool at its cap is starved only if the CPU had room to spare."""
    out_of_cpu = f"{CPU_BOUND_CORES:g}"
    return (
        graph(
            "Is it the CPU?",
            "Cores each process used (process.cpu.time) and its event loop's thread "
            "(asyncio.eventloop.cpu.time), and the share of the time the loop ran callbacks "
            f"(asyncio.eventloop.time). Near the dashed line at {out_of_cpu} core the process "
            "is out of CPU: a full pool then waits for the CPU, and a bigger pool will not help.",
            "short",
        )
        .with_target(promql("process", q.process_cpu_cores(M, RATE), "{{instance}} process cores"))
        .with_target(promql("loop", q.loop_cpu_cores(M, RATE), "{{instance}} loop thread cores"))
        .with_target(promql("busy", q.loop_utilization(M, RATE), "{{instance}} loop busy (share)"))
        .with_target(promql("limit", f"vector({out_of_cpu})", "out of CPU"))
        .override_by_query("limit", CAP_LINE)
    )


def pending_tasks() -> timeseries.Panel:
    return graph(
        "Tasks waiting for a worker",
        "executor.task.pending: tasks submitted and not yet started, per pool.",
        "short",
    ).with_target(promql("A", q.pending(M), "{{instance}} {{executor_name}}"))


def wait_heatmap() -> heatmap.Panel:
    """One heatmap per pool chosen in Pool: a distribution of one pool's waits, never a sum
    of pools whose caps and waits differ."""
    return (
        heatmap.Panel()
        .title("Queue wait in $pool (exemplars open the trace)")
        .description(
            "Tasks per second by executor.task.wait.duration bucket, for one pool (one panel "
            "per pool chosen in Pool), over the instances chosen in Instance. The dots are "
            "exemplars: hover one and follow its link to the trace of a task that waited "
            "that long."
        )
        .datasource(PROMETHEUS)
        .repeat("pool")
        .repeat_direction("h")
        .max_per_row(2)
        .calculate(False)
        .unit("s")
        .mode(common.TooltipDisplayMode.SINGLE)  # the tooltip: the exemplars' links live there
        .show_y_histogram()
        .exemplars_color("rgba(255,0,255,0.7)")
        .with_target(
            prometheus.Dataquery()
            .ref_id("A")
            .expr(q.wait_heatmap(M, RATE))
            .legend_format("{{le}}")
            .format(PromQueryFormat.HEATMAP)
            .range()
            .exemplar(True)
        )
    )


def wait_share() -> timeseries.Panel:
    return (
        graph(
            "Share of request time spent waiting for a worker",
            "Seconds tasks waited for workers per second of request time, by pool. Waits of "
            "background tasks count too.",
            "percentunit",
        )
        .with_target(
            promql("A", q.wait_share_of_request_time(M, RATE), "{{job}} {{executor_name}}")
        )
        .stacking(options.StackingConfig().mode(common.StackingMode.NORMAL))
    )


def wait_and_run() -> timeseries.Panel:
    return (
        graph(
            "Wait p95 and run p95 per pool",
            "A wait as long as the run, or longer, means the pool is too small for its load.",
            "s",
        )
        .with_target(promql("wait", q.wait_quantile(0.95, M, RATE), "{{executor_name}} wait p95"))
        .with_target(promql("run", q.run_quantile(0.95, M, RATE), "{{executor_name}} run p95"))
    )


# --- Panels: event loop --------------------------------------------------------------


def loop_lag() -> timeseries.Panel:
    return (
        graph(
            "Event-loop lag and resume delay",
            "asyncio.eventloop.lag p99: a blocked or overloaded loop, not a pool. Resume "
            "delay p95: the time from a task's end until its awaiting coroutine ran.",
            "s",
        )
        .with_target(promql("lag", q.loop_lag(0.99, M, RATE), "{{instance}} lag p99"))
        .with_target(
            promql(
                "resume", q.resume_delay(0.95, M, RATE), "{{instance}} {{executor_name}} resume p95"
            )
        )
    )


def loop_blocked() -> timeseries.Panel:
    return (
        graph(
            "Event loop blocked, per minute",
            "Callbacks that held the loop past the block threshold "
            "(asyncio.eventloop.block.duration), by cause: cpu and call are the callback's own "
            "doing; gil and cpu_wait mean the loop waited for the GIL or a core, gc for a "
            "garbage collection. Each asyncio.eventloop.blocked span carries the stack.",
            "short",
        )
        .with_target(
            promql(
                "A",
                q.loop_blocked_per_minute(M, RATE),
                "{{instance}} {{asyncio_eventloop_blocked_cause}}",
            )
        )
        .draw_style(common.GraphDrawStyle.BARS)
    )


# --- Panels: LLM calls -----------------------------------------------------------------


def llm_in_flight() -> timeseries.Panel:
    return graph(
        "LLM calls in flight",
        "Mean concurrent LLM calls: call-seconds per second of gen_ai.client.operation.duration.",
        "short",
    ).with_target(promql("A", q.llm_in_flight(M, RATE), "{{job}} {{gen_ai_request_model}}"))


def llm_first_chunk() -> timeseries.Panel:
    return percentiles(
        graph(
            "Time to first chunk",
            "gen_ai.client.operation.time_to_first_chunk of streamed calls.",
            "s",
        ),
        lambda quantile: q.llm_quantile(p.LLM_FIRST_CHUNK, quantile, M, RATE),
        "{{gen_ai_request_model}}",
    )


def llm_duration() -> timeseries.Panel:
    return percentiles(
        graph("LLM call duration", "gen_ai.client.operation.duration.", "s"),
        lambda quantile: q.llm_quantile(p.LLM_DURATION, quantile, M, RATE),
        "{{gen_ai_request_model}}",
    )


def llm_tokens() -> timeseries.Panel:
    return graph(
        "Tokens per second", "gen_ai.client.token.usage by gen_ai.token.type.", "short"
    ).with_target(promql("A", q.llm_tokens_per_second(M, RATE), "{{job}} {{gen_ai_token_type}}"))


def pinned_workers() -> timeseries.Panel:
    return (
        graph(
            "Workers pinned by blocking calls: LLM and HTTP",
            "Worker-seconds per second spent inside sync LLM calls and inside blocking HTTP "
            "calls (requests, httpx.Client, urllib3, urllib), by pool: how many of the pool's "
            "workers such calls hold on average. Compare with the cap; the fix is an async "
            "client.",
            "short",
        )
        .with_target(
            promql("A", q.llm_pinned_workers(M, RATE), "{{instance}} {{executor_name}} LLM")
        )
        .with_target(
            promql("B", q.io_pinned_workers(M, RATE), "{{instance}} {{executor_name}} HTTP")
        )
        .with_target(promql("limit", q.limit(M), "{{instance}} {{executor_name}} limit"))
        .override_by_query("limit", CAP_LINE)
    )


# --- Panels: traces ----------------------------------------------------------------------


def slow_waits_tempo() -> table.Panel:
    traceql = (
        f'{{ resource.service.name = "$trace_service" && name = "{semconv.SPAN_WAIT}" '
        f'&& span.{semconv.ATTR_EXECUTOR_NAME} =~ "$pool" && duration >= {SLOW_WAIT} }}'
    )
    return (
        table.Panel()
        .title(f"Slowest recent waits (Tempo): executor.wait ≥ {SLOW_WAIT}")
        .description(
            "TraceQL search of executor.wait spans; click a trace to see its waterfall. "
            "In its own collapsed row, so a Grafana without a Tempo shows no error: "
            "set POOLSCOPE_TEMPO_URL to your Tempo and open the row (docs/stack.md)."
        )
        .datasource(TEMPO)
        .with_target(
            tempo.TempoQuery()
            .ref_id("A")
            .query_type("traceql")
            .query(traceql)
            .limit(20)
            .datasource(TEMPO)
        )
    )


def slow_waits_jaeger() -> table.Panel:
    return (
        table.Panel()
        .title(f"Slowest recent waits (Jaeger): executor.wait ≥ {SLOW_WAIT}")
        .description("Jaeger search for executor.wait spans of the service chosen in 'Traces of'.")
        .datasource(JAEGER)
        .with_target(
            JaegerQuery(
                "A",
                datasource={"type": "jaeger", "uid": "${jaeger}"},
                service="$trace_service",
                operation=semconv.SPAN_WAIT,
                minDuration=SLOW_WAIT,
                limit=20,
            )
        )
    )


def wait_spans() -> timeseries.Panel:
    return graph(
        "Tasks waiting, from executor.wait spans",
        "For apps that export traces only: seconds in executor.wait spans per second (the "
        "mean number of tasks queued), from the collector's span metrics.",
        "short",
    ).with_target(
        promql(
            "A",
            q.wait_span_seconds(M, RATE),
            "{{instance}} {{executor_name}} (limit {{executor_worker_limit}})",
        )
    )


# --- Dashboard -----------------------------------------------------------------------

TEMPO_ROW: Final = "Slowest waits in Tempo (needs a Tempo datasource)"
"""Collapsed, so its query runs only when opened: a Grafana without Tempo shows no error."""
ROWS: Final[tuple[tuple[str, tuple[tuple[Any, int], ...]], ...]] = (
    ("Requests", ((request_rate, 8), (request_latency, 8), (requests_in_flight, 8))),
    ("Fleet", ((fleet_saturation, 24),)),
    (
        "Where requests wait",
        (
            (where_requests_wait, 24),
            (waits_by_route, 24),
            (busy_against_limit, 12),
            (is_it_cpu, 12),
            (pending_tasks, 12),
            (wait_heatmap, 12),
            (wait_share, 12),
            (wait_and_run, 12),
        ),
    ),
    ("Event loop", ((loop_lag, 12), (loop_blocked, 12))),
    (
        "LLM calls",
        (
            (llm_in_flight, 8),
            (llm_first_chunk, 8),
            (llm_duration, 8),
            (llm_tokens, 12),
            (pinned_workers, 12),
        ),
    ),
    ("Slowest waits", ((slow_waits_jaeger, 12), (wait_spans, 12))),
    (TEMPO_ROW, ((slow_waits_tempo, 24),)),
)
PANEL_HEIGHT: Final = 8


def _variable(name: str, label: str, query: str) -> dash.QueryVariable:
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(PROMETHEUS)
        .query(query)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(ALL)
        .current(model.VariableOption(selected=True, text="All", value="$__all"))
    )


def _trace_service() -> dash.QueryVariable:
    """One service (a trace search takes one), named as the traces name it: service.name."""
    return (
        dash.QueryVariable("trace_service")
        .label("Traces of")
        .datasource(PROMETHEUS)
        .query(f"label_values({p.LIMIT}, {p.SERVICE_NAME})")
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
    )


def _datasource(name: str, label: str, plugin: str) -> dash.DatasourceVariable:
    return dash.DatasourceVariable(name).label(label).type(plugin)


def variables() -> list[Any]:
    service = f"label_values({p.LIMIT}, {p.SERVICE})"
    instance = f'label_values({p.LIMIT}{{{p.SERVICE}=~"$service"}}, {p.INSTANCE})'
    pool = (
        f'label_values({p.LIMIT}{{{p.SERVICE}=~"$service", {p.INSTANCE}=~"$instance"}}, {p.POOL})'
    )
    return [
        _datasource("datasource", "Prometheus", "prometheus"),
        _datasource("tempo", "Tempo", "tempo"),
        _datasource("jaeger", "Jaeger", "jaeger"),
        _variable("service", "Service", service),
        _variable("instance", "Instance", instance),
        _variable("pool", "Pool", pool),
        _trace_service(),
    ]


def main_dashboard() -> dash.Dashboard:
    board = (
        dash.Dashboard(TITLE)
        .uid(UID)
        .tags(["poolscope", "asyncio", "thread-pool"])
        .description(
            "Time waiting for a worker, per pool, against each pool's cap; the event loop; "
            "LLM calls. Generated by tools/stackgen from poolscope's telemetry names."
        )
        .editable()
        .time("now-30m", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
    )
    for variable in variables():
        board = board.with_variable(variable)
    y = 0
    ids = itertools.count(1)  # stable ids: links and provisioning refer to panels by them
    for title, panels in ROWS:
        collapsed = title == TEMPO_ROW
        row = (
            dash.Row(title)
            .id(next(ids))
            .collapsed(collapsed)
            .grid_pos(model.GridPos(h=1, w=_WIDTH, x=0, y=y))
        )
        y += 1
        x = 0
        placed = []
        for factory, width in panels:
            if x + width > _WIDTH:
                x, y = 0, y + PANEL_HEIGHT
            grid = model.GridPos(h=PANEL_HEIGHT, w=width, x=x, y=y)
            placed.append(factory().id(next(ids)).grid_pos(grid))
            x += width
        y += PANEL_HEIGHT
        if collapsed:  # a collapsed row holds its panels itself
            for panel in placed:
                row = row.with_panel(panel)
            board = board.with_row(row)
        else:
            board = board.with_row(row)
            for panel in placed:
                board = board.with_panel(panel)
    return board


def dashboards() -> dict[str, Any]:
    """Generated dashboards by file name."""
    return {"poolscope.json": plain(main_dashboard().build())}


def expressions(board: dict[str, Any]) -> Sequence[tuple[str, str, str]]:
    """(panel title, refId, PromQL) of every Prometheus target in a dashboard's JSON."""
    found = []
    for panel in board.get("panels", []):
        for target in panel.get("targets", []) or []:
            if (target.get("datasource") or panel.get("datasource") or {}).get(
                "type"
            ) == "prometheus":
                found.append((panel["title"], target["refId"], target["expr"]))
    return found
