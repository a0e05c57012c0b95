"""The ways work reaches a pool: ``concurrent.futures`` executors, anyio's worker
threads, and the semaphores and limiters the user wraps.

Each module patches one library (or wraps one primitive) and records through
``_core``. They may import ``_core`` and the leaves; ``_runtime`` installs
their patches.
"""
