"""The ``poolscope`` command: ``load``, ``demo``, ``top``, ``diagnose`` and the load generator.

Tooling the instrumentation never imports. May import everything else.
"""
