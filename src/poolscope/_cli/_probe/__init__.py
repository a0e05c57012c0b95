"""An app under rising load, its pools read while it runs: ``poolscope load`` and the demo.

``_model`` holds what a probe run is (targets, steps, figures); ``_drive``
runs one; ``_report`` renders one and imports only ``_model``.
"""
