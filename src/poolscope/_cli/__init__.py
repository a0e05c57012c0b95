"""The ``poolscope`` command: ``top``, ``diagnose``, ``demo`` and the load generator.

Tooling the instrumentation never imports. May import everything else.
"""
