"""The recording core: pools, tasks, the roll-up, the loop monitor, the telemetry binding.

Everything a hot path needs at run time, and nothing that knows which library
is patched. It may import only the leaves (``semconv``, ``_config``,
``_errors``, ``_safety``, ``_thresholds``, ``_version``) and the OpenTelemetry
API; never the SDK, the paths, the CLI or the analysis.
"""
