"""Generate the stack's dashboards and alert rules from poolscope's telemetry names.

``python -m tools.stackgen`` writes them; ``--check`` fails when a committed
file differs from what would be generated. Every query is built from
:mod:`poolscope._analysis._promql`, which derives the series names from
:mod:`poolscope.semconv`: one source of truth for the package, the dashboards
and the alerts.
"""
