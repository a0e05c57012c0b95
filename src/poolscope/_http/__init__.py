"""Blocking HTTP calls on a pool's worker: ``requests``, ``httpx.Client``, ``urllib3``
and ``urllib.request``, each a CLIENT span with the pool's name, and the request
that handed the work to the pool marked as pinned by I/O.

May import ``_core`` and the leaves; ``_runtime`` installs the patches.
"""
