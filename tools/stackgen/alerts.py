"""poolscope's alerts, defined once, rendered as Prometheus rules and as Grafana rules.

Each alert is a *measure* (an expression whose value is worth reading: a
saturation, a p95 wait), a *condition* on it, an optional *guard* joined with
``and``, and how long it must hold. Both renderings evaluate the same PromQL;
only the template syntax of the annotations differs. Summaries name the pool
and its limit (``$LIMIT``); ``$VALUE`` is the measured value. The runbook for
each alert is the section of ``docs/stack.md`` named after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from grafana_foundation_sdk.builders import alerting, expr, prometheus
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.alerting import RelativeTimeRange

from poolscope._analysis import _promql as p
from poolscope._analysis import _queries as q
from poolscope._thresholds import (
    CPU_BOUND_CORES,
    LAG_THRESHOLD_S,
    LATE_SHARE,
    LOOP_BUSY,
    MIN_BLOCKS,
    ON_CPU,
    SATURATION,
)

from ._encoding import plain

RUNBOOK: Final = "docs/stack.md"
"""Runbooks: the section of this file named after the alert (in the poolscope repository)."""
GROUP: Final = "poolscope"
FOLDER: Final = "poolscope"
PROMETHEUS_UID: Final = "prometheus"
"""The uid the provisioned Prometheus datasource has (grafana/provisioning/datasources)."""

WINDOW: Final = "1m"
"""What each alert's measure covers: short, so that it fires and resolves within minutes."""
HOLD: Final = "1m"
"""How long a measure must stay past its threshold: with ``WINDOW``, an alert fires about 1.5
minutes into sustained starvation and resolves within a minute of its end."""
BLOCK_WINDOW: Final = "2m"
WAIT_P95_THRESHOLD_S: Final = 0.1
WAITING_TASKS_THRESHOLD: Final = 1.0

LIMIT_FROM_SERIES: Final = "series"
LIMIT_FROM_LABEL: Final = "label"


@dataclass(frozen=True)
class Alert:
    name: str
    measure: str
    condition: str
    for_: str
    severity: str
    summary: str
    description: str
    guard: str | None = None
    """An expression that must also hold (``and``)."""
    alternative: str | None = None
    """An expression that fires the alert too (``or``), its value read as the measure's."""
    unless: str | None = None
    """An expression whose presence silences the alert (``unless``)."""
    key: tuple[str, ...] = p.POOL_KEY
    limit: str | None = LIMIT_FROM_SERIES
    """Where ``$LIMIT`` comes from: the limit series, a label of the measure, or nowhere."""

    @property
    def expr(self) -> str:
        expr = f"{self.measure} {self.condition}"
        if self.alternative:
            expr = f"({expr})\nor {p.on(*self.key)}\n({self.alternative})"
        if self.guard:
            expr = f"({expr})\nand {p.on(*self.key)}\n({self.guard})"
        if self.unless:
            expr = f"({expr})\nunless {p.on(*p.POOL_KEY)}\n({self.unless})"
        return expr

    @property
    def runbook(self) -> str:
        return f"{RUNBOOK}#{self.name.lower()}"


_POOL: Final = "{{ $labels.executor_name }} ({{ $labels.executor_type }})"
_WHERE: Final = "in {{ $labels.job }} on {{ $labels.instance }}"

_LOOP_WHERE: Final = "{{ $labels.job }} on {{ $labels.instance }}"
_M: Final = q.NO_MATCHERS

ALERTS: Final[tuple[Alert, ...]] = (
    Alert(
        name="PoolscopePoolSaturated",
        measure=q.typical_saturation(_M, WINDOW),
        condition=f">= {SATURATION}",
        guard=f"{q.peak_pending(_M, WINDOW)} > 0",
        for_=HOLD,
        severity="warning",
        summary=f"Pool {_POOL} {_WHERE} is saturated: all $LIMIT workers busy, tasks queued",
        description=(
            "For most of the last minute {{ $VALUE | humanizePercentage }} of the pool's "
            "$LIMIT workers were busy, and tasks queued for a seat. Everything that needs "
            "this pool waits, while the CPU may sit idle (if PoolscopeProcessOutOfCpu fires "
            "too, the tasks wait for the CPU, and a bigger pool will not help)."
        ),
    ),
    Alert(
        name="PoolscopeQueueWaitHigh",
        measure=q.wait_quantile(0.95, _M, WINDOW),
        condition=f"> {WAIT_P95_THRESHOLD_S}",
        for_=HOLD,
        severity="warning",
        summary=(
            "Tasks wait {{ $VALUE | humanizeDuration }} (p95) for a worker of pool "
            f"{_POOL} {_WHERE} (limit $LIMIT)"
        ),
        description=(
            f"The 95th percentile of the time tasks queued for a worker, over {WINDOW}, "
            f"is above {WAIT_P95_THRESHOLD_S * 1000:.0f} ms."
        ),
    ),
    Alert(
        name="PoolscopeProcessOutOfCpu",
        measure=q.process_cpu_cores(_M, WINDOW),
        condition=f">= {CPU_BOUND_CORES}",
        alternative=(
            f"{q.process_cpu_cores(_M, WINDOW)}\nand {p.on(*p.LOOP_KEY)} "
            f"({q.loop_utilization(_M, WINDOW)} >= {LOOP_BUSY})\nand {p.on(*p.LOOP_KEY)} "
            f"({q.loop_cpu_cores(_M, WINDOW)} >= {ON_CPU} * {q.loop_utilization(_M, WINDOW)})"
        ),
        for_=HOLD,
        severity="warning",
        summary=f'{_LOOP_WHERE} is out of CPU: it uses {{{{ $VALUE | printf "%.2f" }}}} cores',
        description=(
            "The process used about a core (its Python runs on one at a time), or its event "
            f"loop ran callbacks {LOOP_BUSY:.0%} of the time on the CPU. Requests wait for the "
            "CPU, not for a pool: run more processes, or do less work per request."
        ),
        key=p.LOOP_KEY,
        limit=None,
    ),
    Alert(
        name="PoolscopeEventLoopLagging",
        measure=q.late_heartbeats(_M, WINDOW),
        condition=f">= {LATE_SHARE}",
        for_=HOLD,
        severity="warning",
        summary=(
            "The event loop of {{ $labels.job }} on {{ $labels.instance }} runs late: "
            "{{ $VALUE | humanizePercentage }} of its heartbeats over "
            f"{LAG_THRESHOLD_S * 1000:.0f} ms late"
        ),
        description=(
            "The loop itself is blocked, out of CPU or waiting for the GIL; no pool is short "
            "of workers. Look for asyncio.eventloop.blocked spans: their cause and stack say "
            "which."
        ),
        key=p.LOOP_KEY,
        limit=None,
    ),
    Alert(
        name="PoolscopeEventLoopBlocked",
        measure=q.loop_blocked(_M, BLOCK_WINDOW),
        condition=f">= {MIN_BLOCKS}",  # one stall (a first request's imports) is not a pattern
        for_="0m",
        severity="info",
        summary=(
            "The event loop of {{ $labels.job }} on {{ $labels.instance }} was blocked "
            f"{{{{ $VALUE | humanize }}}} times in {BLOCK_WINDOW}"
        ),
        description=(
            "Callbacks held the loop themselves (they ran, or sat in a blocking call). "
            "asyncio.eventloop.block.duration names each line; each asyncio.eventloop.blocked "
            "span carries its stack (code.stacktrace)."
        ),
        key=p.LOOP_KEY,
        limit=None,
    ),
    Alert(
        name="PoolscopeWaitSpansHigh",
        measure=q.wait_span_seconds(_M, WINDOW),
        condition=f">= {WAITING_TASKS_THRESHOLD}",
        for_=HOLD,
        severity="warning",
        summary=(
            "On average {{ $VALUE | humanize }} tasks wait for a worker of pool "
            f"{_POOL} {_WHERE} (limit $LIMIT), from executor.wait spans"
        ),
        description=(
            "For apps that export traces only (silent when the pool's metrics arrive): "
            "the collector's span metrics of executor.wait spans. Only waits long enough "
            "to get a span count, so this is a lower bound."
        ),
        unless=q.limit(_M),  # apps that export metrics have the alerts above
        key=(*p.POOL_KEY, p.WORKER_LIMIT),
        limit=LIMIT_FROM_LABEL,
    ),
)


def _template(action: str) -> str:
    """A Go template action, ``{{ action }}``."""
    return "{{ " + action + " }}"


def _render(template: str, alert: Alert, *, value: str, limit_series: str) -> str:
    if "$LIMIT" in template:
        if alert.limit == LIMIT_FROM_LABEL:
            limit = _template(f"$labels.{p.WORKER_LIMIT}")
        elif alert.limit == LIMIT_FROM_SERIES:
            limit = limit_series
        else:
            raise ValueError(f"{alert.name}: $LIMIT in a template, but the alert has no limit")
        template = template.replace("$LIMIT", limit)
    return template.replace("$VALUE", value)


# --- Prometheus ----------------------------------------------------------------------


def _prometheus_limit_lookup(alert: Alert) -> str:
    matchers = ",".join(f"{name}='%s'" for name in alert.key)
    labels = " ".join(f"$labels.{name}" for name in alert.key)
    lookup = f'printf "{p.LIMIT}{{{matchers}}}" {labels} | query'
    return _template(f"with {lookup}") + _template(". | first | value") + _template("end")


def prometheus_rules() -> dict[str, Any]:
    """The rules file Prometheus loads (``rule_files``)."""
    rules = []
    for alert in ALERTS:
        lookup = _prometheus_limit_lookup(alert)
        rules.append(
            {
                "alert": alert.name,
                "expr": alert.expr,
                "for": alert.for_,
                "labels": {"severity": alert.severity},
                "annotations": {
                    "summary": _render(alert.summary, alert, value="$value", limit_series=lookup),
                    "description": _render(
                        alert.description, alert, value="$value", limit_series=lookup
                    ),
                    "runbook": alert.runbook,
                },
            }
        )
    return {"groups": [{"name": GROUP, "rules": rules}]}


# --- Grafana -------------------------------------------------------------------------

GRAFANA_API_ONLY: Final = ("folderUID", "ruleGroup", "orgID")
"""Fields of the API's rule that a provisioning file sets on the group instead."""
_MEASURE: Final = "A"
_LIMIT: Final = "L"
_CONDITION: Final = "C"
_LOOKBACK_S: Final = 600


def _prometheus_query(ref_id: str, promql: str) -> alerting.Query:
    return (
        alerting.Query(ref_id)
        .datasource_uid(PROMETHEUS_UID)
        .relative_time_range(_relative_time_range())
        .model(prometheus.Dataquery().expr(promql).instant().ref_id(ref_id))
    )


def _relative_time_range() -> RelativeTimeRange:
    return RelativeTimeRange(from_val=_LOOKBACK_S, to=0)


def _grafana_rule(alert: Alert) -> alerting.Rule:
    value = f"$values.{_MEASURE}.Value"
    limit = _template(f"$values.{_LIMIT}.Value")
    fires = (
        expr.TypeThreshold()
        .ref_id(_CONDITION)
        .expression(_MEASURE)
        .datasource(model.DataSourceRef(type_val="__expr__", uid="__expr__"))
        .conditions(
            [
                expr.ExprTypeThresholdConditions().evaluator(
                    expr.ExprTypeThresholdConditionsEvaluator().type("gt").params([0])
                )
            ]
        )
    )
    rule = (
        alerting.Rule(alert.name)
        .uid(alert.name.lower())
        .condition(_CONDITION)
        .with_query(_prometheus_query(_MEASURE, alert.expr))
        .with_query(
            alerting.Query(_CONDITION)
            .datasource_uid("__expr__")
            .relative_time_range(_relative_time_range())
            .model(fires)
        )
        .for_val(alert.for_)
        .no_data_state("OK")
        .exec_err_state("Error")
        .labels({"severity": alert.severity})
        .annotations(
            {
                "summary": _render(alert.summary, alert, value=value, limit_series=limit),
                "description": _render(alert.description, alert, value=value, limit_series=limit),
                "runbook": alert.runbook,
            }
        )
    )
    if alert.limit == LIMIT_FROM_SERIES:
        rule = rule.with_query(_prometheus_query(_LIMIT, q.limit(q.NO_MATCHERS)))
    return rule


def grafana_rules() -> dict[str, Any]:
    """Grafana's alerting provisioning file: the same alerts as Grafana-managed rules.

    The expression of each rule already holds its condition, so a series in
    the result means "firing" (threshold ``> 0`` on the measured value) and no
    data means OK.
    """
    rules = []
    for alert in ALERTS:
        rule = plain(_grafana_rule(alert).build())
        for api_only in GRAFANA_API_ONLY:
            rule.pop(api_only, None)
        rules.append(rule)
    group = {"orgId": 1, "name": GROUP, "folder": FOLDER, "interval": "1m", "rules": rules}
    return {"apiVersion": 1, "groups": [group]}
