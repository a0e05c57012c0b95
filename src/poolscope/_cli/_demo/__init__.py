"""``poolscope demo``: the example apps under rising load, their verdicts and report.

``_model`` holds what a run is (scenarios, settings, results); ``_run`` drives
it; ``_report`` renders it and imports only ``_model``.
"""
